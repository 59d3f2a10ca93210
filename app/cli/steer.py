"""`monoscope steer`: pinned sampling from the command line, on a run folder (no database needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from app.cli.common import RunOpt, cli
from app.read.steer_schemas import MAX_PINS, SteerRequest, parse_pin
from sae.conventions import NEURON_BASIS
from sae.errors import MonoscopeError

_DEFAULTS = {name: field.default for name, field in SteerRequest.model_fields.items()}


@cli.command()
def steer(
    run: RunOpt,
    pin: Annotated[list[str], typer.Option("--pin", help=f"`basis:index` or `basis:index=value` (repeatable, at most {MAX_PINS}; default value: the unit's max observed activation).")],
    prompt: Annotated[str, typer.Option("--prompt", help="Text to continue (default: BOS alone, the paper's neutral prefix).")] = _DEFAULTS["prompt"],
    mode: Annotated[str, typer.Option("--mode", help="pin: x + (v - f_i(x)) d_i (a neuron set to v); add: x + v d_i.")] = _DEFAULTS["mode"],
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Tokens to sample.")] = _DEFAULTS["max_tokens"],
    temperature: Annotated[float, typer.Option("--temperature", help="0: greedy.")] = _DEFAULTS["temperature"],
    seed: Annotated[int, typer.Option("--seed", help="Seed of both continuations' draws.")] = _DEFAULTS["seed"],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as the API's JSON.")] = False,
) -> None:
    """Continue a prompt with units pinned, beside the unsteered continuation (same seed)."""
    from pydantic import ValidationError

    from app.read.steer_schemas import PinOut
    from app.web.infer import live_model
    from app.web.steer import run_steering

    try:
        request = SteerRequest(prompt=prompt, pins=[parse_pin(p) for p in pin], mode=mode, max_tokens=max_tokens,
                               temperature=temperature, seed=seed)
    except ValidationError as e:
        first = e.errors()[0]
        raise MonoscopeError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    except ValueError as e:
        raise MonoscopeError(str(e)) from None
    run = Path(run)
    if not (run / "lm").is_dir():
        raise MonoscopeError(f"no LM in {run}: run `monoscope train-lm` first")
    pins = []
    for p in request.pins:
        peak = _max_activation(run, p.basis, p.index)
        pins.append(PinOut(basis=p.basis, index=p.index, value=peak if p.value is None else p.value,
                           max_activation=peak, label=None, url=""))
    sae_names = tuple(sorted({p.basis for p in pins if p.basis != NEURON_BASIS}))
    for name in sae_names:
        if not (run / "saes" / name).is_dir():
            raise MonoscopeError(f"no SAE {name!r} in {run / 'saes'}")
    result = run_steering(live_model(run, sae_names), run.name, request, pins)
    if as_json:
        typer.echo(result.model_dump_json(indent=1))
        return
    for p in result.pins:
        typer.echo(f"pin {p.basis}:{p.index} {'=' if result.mode == 'pin' else '+'} {p.value:.4g} "
                   f"(max observed {p.max_activation:.4g})")
    typer.echo(f"--- steered ({result.changed} of {len(result.steered)} tokens differ)\n{prompt}{result.steered_text}")
    typer.echo(f"--- unsteered\n{prompt}{result.unsteered_text}")


def _max_activation(run: Path, basis: str, index: int) -> float:
    """Return a unit's max observed activation from its analysis (0 when the basis is not analysed)."""
    from app.store.npz import load_npz

    path = run / "analysis" / basis / "units.npz"
    if not path.is_file():
        return 0.0
    peaks = load_npz(path)["max_activation"]
    if index >= len(peaks):
        raise MonoscopeError(f"{basis} has units 0 to {len(peaks) - 1}, not {index}")
    return float(peaks[index])
