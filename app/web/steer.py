"""Pinned sampling for the web and the CLI: resolve the pins of a `SteerRequest`, sample, describe the result.

The LM and SAEs come from live inference's per-process cache (`app.web.infer.live_model`), so steering loads nothing
a second time; the maths is `sae.steering`, imported lazily (this module loads without torch, like the pages).
"""

from __future__ import annotations

from pathlib import Path

from app.read import queries
from app.read.steer_schemas import PinOut, SteerRequest, SteerResult, SteerToken
from app.read.urls import unit_url
from app.read.windows import visible_whitespace
from app.web.infer import LiveModel, Unavailable, live_model
from sae.conventions import NEURON_BASIS


def steer_result(session, request: SteerRequest) -> SteerResult:
    """Return the steered and unsteered continuations of the request, its pins resolved against the database
    (a pin without a value takes the unit's max observed activation)."""
    ctx = queries.live_context(session=session, model=request.model)
    run_dir = Path(ctx.run_dir)
    if not (run_dir / "lm").is_dir():
        raise Unavailable(f"steering needs the run folder {run_dir} of model {ctx.model!r}, which is not on this "
                          "machine")
    by_name = {b.name: b for b in ctx.bases}
    pins = []
    for pin in request.pins:
        basis = by_name.get(pin.basis)
        if basis is None:
            raise queries.NotFound(f"no basis {pin.basis!r} in model {ctx.model!r}")
        if pin.index >= basis.n_units:
            raise queries.NotFound(f"{pin.basis} has units 0 to {basis.n_units - 1}, not {pin.index}")
        peak = queries.max_activations(session=session, basis_id=basis.id, indexes=[pin.index]).get(pin.index, 0.0)
        label = queries.labels_for(session=session, basis_id=basis.id, indexes=[pin.index]).get(pin.index)
        pins.append(PinOut(basis=pin.basis, index=pin.index, value=peak if pin.value is None else pin.value,
                           max_activation=peak, label=label, url=unit_url(pin.basis, pin.index, ctx.model_param)))
    sae_names = tuple(sorted({p.basis for p in pins if p.basis != NEURON_BASIS}))
    missing = [n for n in sae_names if not (run_dir / "saes" / n).is_dir()]
    if missing:
        raise Unavailable(f"steering needs saes/{missing[0]} in the run folder {run_dir}, which this machine lacks")
    return run_steering(live_model(run_dir, sae_names), ctx.model, request, pins)


def run_steering(live: LiveModel, model_name: str, request: SteerRequest, pins: list[PinOut]) -> SteerResult:
    """Return the result of sampling with `pins` (values resolved) on a loaded model."""
    from sae.steering import Pin, Sampling, check_pins, sample

    sizes = {NEURON_BASIS: int(live.model.cfg.d_mlp), **{n: int(s.W_dec.shape[0]) for n, s in live.saes.items()}}
    pinned = [Pin(p.basis, p.index, p.value, request.mode) for p in pins]
    check_pins(pinned, sizes)
    prompt = [live.bos_id] + (live.tokenize(request.prompt) if request.prompt else [])
    steered, unsteered = sample(live.model, live.saes, prompt, pinned,
                                Sampling(request.max_tokens, request.temperature, request.seed))
    return SteerResult(model=model_name, prompt=request.prompt, prompt_tokens=len(prompt) - 1, mode=request.mode,
                       temperature=request.temperature, seed=request.seed, pins=pins,
                       steered=_tokens(live, steered, unsteered.tokens), unsteered=_tokens(live, unsteered,
                                                                                          steered.tokens),
                       steered_text=_decode(live, steered.tokens), unsteered_text=_decode(live, unsteered.tokens),
                       changed=sum(a != b for a, b in zip(steered.tokens, unsteered.tokens)))


def _tokens(live: LiveModel, run, other: list[int]) -> list[SteerToken]:
    texts = [live.token_text(t) for t in run.tokens]
    return [SteerToken(id=t, text=text, shown=shown, p_steered=ps, p_unsteered=pu, changed=t != o)
            for t, text, shown, ps, pu, o in zip(run.tokens, texts, visible_whitespace(texts), run.p_steered,
                                                 run.p_unsteered, other)]


def _decode(live: LiveModel, ids: list[int]) -> str:
    """Return the text of token ids (the tokenizer's decoding: partial UTF-8 joins its neighbours)."""
    return live.tokenizer.decode(ids)
