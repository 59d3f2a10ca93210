"""Automated interpretability end to end with the real small model (SmolLM2-135M-Instruct, no scripted answers) on
the tiny analysed run: the CLI explains and scores, stores, resumes; the explainer's prompt holds the paper's example
mix and none of the scoring examples; the endpoint backend talks to a real HTTP server serving the same model."""

import socket

import pytest
from sqlalchemy import func, select
from webapp_fixtures import SAE_NAME, assert_one_line_error, ingest_run, monoscope

from sae.autointerp import prompts
from sae.autointerp.chat_server import ChatHandler, ChatServer
from sae.autointerp.config import AutointerpConfig
from sae.autointerp.endpoint import EndpointLLM
from sae.autointerp.windows import plain, with_levels
from sae.errors import MonoscopeError

SMALL_MIX = ("explain_top=3,explain_per_interval=1,explain_random=1,explain_top_token_contexts=1,explain_max_tokens=12,"
             "sim_top=1,sim_per_interval=0,sim_random=1,sim_top_token_contexts=1,detect_active=2,detect_silent=2,"
             "fuzz_examples=2,logit_to=13,logit_random=3")


@pytest.fixture(scope="module")
def db_url(analysed_run, tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('autointerp_db') / 'monoscope.db'}"
    ingest_run(analysed_run, url)
    return url


@pytest.fixture(scope="module")
def pool(analysed_run, db_url):
    from app.store.autointerp import draw_units
    from app.store.db import session_factory
    from app.store.models import Basis
    from sae.autointerp.heldout import load_pool

    with session_factory(db_url)() as session:
        bases = list(session.scalars(select(Basis).order_by(Basis.name)))
        units = draw_units(session, bases, 2, seed=0)
    return units, load_pool(analysed_run, units, analysed_tokens=8192, n_rows=256, logit_k=60)


def test_the_explain_prompt_holds_the_paper_mix_and_no_scoring_example(db_url, pool):
    from app.store.autointerp import unit_evidence
    from app.store.db import session_factory
    from app.store.models import Basis

    units, held = pool
    cfg = AutointerpConfig()
    with session_factory(db_url)() as session:
        basis = session.scalar(select(Basis).where(Basis.name == SAE_NAME))
        ev = unit_evidence(session, basis, units[SAE_NAME][0], held, cfg)
    kinds = [w.kind for w in ev.explain]
    assert kinds.count("top") == cfg.explain_top
    assert kinds.count("random") == cfg.explain_random and kinds.count("top_token") >= 1
    buckets = {w.bucket for w in ev.explain if w.kind == "interval"}
    assert len(buckets) >= 2  # a few from each interval that has samples
    text = prompts.explain(ev.explain, ev.max_activation, ev.top_logits, ev.bottom_logits)[1]["content"]
    for w in ev.explain:
        assert with_levels(w, ev.max_activation) in text
    scoring = ev.simulate + ev.detect_active + ev.detect_silent + ev.fuzz
    assert scoring and {w.kind for w in ev.simulate} >= {"top", "random"}
    shown = {w.texts for w in ev.explain}
    assert not [w for w in scoring if w.texts in shown]
    for w in ev.simulate:
        assert plain(w) not in text
    assert len(ev.logit_positive) == cfg.logit_to - cfg.logit_from and len(ev.logit_negative) == cfg.logit_random
    assert not set(ev.logit_positive) & set(ev.logit_negative)


@pytest.fixture(scope="module")
def explained(local_llm, db_url):
    """`monoscope autointerp` run once (in this process, so on the session's model) over one unit of each basis:
    (exit code, stdout, stderr, the arguments)."""
    import contextlib
    import io
    import sys

    from app.cli import main

    args = ["autointerp", "--bases", f"neurons,{SAE_NAME}", "--per-basis", "1", "--mix", SMALL_MIX, "--db", db_url]
    out, err, code = io.StringIO(), io.StringIO(), 0
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        patch.setattr(sys, "argv", ["monoscope", *args])
        try:
            main()
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue(), args


def test_the_cli_explains_scores_stores_and_resumes(local_llm, explained, db_url, monkeypatch, capsys):
    from app.store.db import session_factory
    from app.store.models import Explanation, ExplanationScore

    code, out, err, args = explained
    assert code == 0, err
    assert "2 units: 2 explained, 8 scores" in out and local_llm.name in out
    with session_factory(db_url)() as session:
        rows = list(session.scalars(select(Explanation)))
        scores = list(session.scalars(select(ExplanationScore)))
    assert len(rows) == 2 and all(r.text and r.model == local_llm.name and r.prompt_tokens > 0 for r in rows)
    assert all(r.completion_tokens > 0 and r.examples for r in rows)
    assert sorted(s.scorer for s in scores) == sorted(["simulation", "detection", "fuzzing", "logits"] * 2)
    for s in scores:
        assert s.score is None or -1.0 <= s.score <= 1.0
        assert s.prompt_tokens > 0
    sim = next(s for s in scores if s.scorer == "simulation")
    assert sim.details["n_tokens"] == sum(len(e["actual"]) for e in sim.details["examples"])
    # a second run finds everything up to date and changes nothing
    code, out, err = monoscope(monkeypatch, capsys, *args)
    assert code == 0 and "0 explained, 0 scores, 2 up to date" in out, out + err
    with session_factory(db_url)() as session:
        assert [r.created for r in session.scalars(select(Explanation))] == [r.created for r in rows]


def test_bad_input_is_one_line(db_url, monkeypatch, capsys):
    assert_one_line_error(monoscope(monkeypatch, capsys, "autointerp", "--bases", "nope", "--db", db_url),
                          "no ready basis named 'nope'")
    assert_one_line_error(monoscope(monkeypatch, capsys, "autointerp", "--bases", "neurons", "--mix", "x=1",
                                    "--db", db_url), "--mix takes NAME=N")
    assert_one_line_error(monoscope(monkeypatch, capsys, "autointerp", "--bases", "neurons", "--units",
                                    "neurons:99999", "--db", db_url), "no unit 99999")
    assert_one_line_error(monoscope(monkeypatch, capsys, "autointerp", "--bases", "neurons", "--per-basis", "0",
                                    "--db", db_url), "--per-basis")


class Flaky(ChatHandler):
    """Answers the first chat request 429 (with Retry-After) and the second 503, then serves normally."""

    def do_POST(self):
        with self.server.counter:
            self.server.attempts = getattr(self.server, "attempts", 0) + 1
            attempt = self.server.attempts
        if attempt == 1:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            return self._send(429, {"error": {"message": "slow down", "type": "rate_limit"}}, {"Retry-After": "0"})
        if attempt == 2:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            return self._send(503, {"error": {"message": "busy", "type": "server_error"}})
        return super().do_POST()


def test_the_endpoint_backend_against_a_real_server(local_llm):
    from sae.autointerp.windows import Window

    server = ChatServer(local_llm, handler=Flaky).start()
    try:
        remote = EndpointLLM(server.base_url, "smollm2", None, concurrency=3, timeout=60, retries=3)
        messages = prompts.logit("closing brackets", ")")
        answer = remote.complete(messages, max_tokens=8)  # after a 429 and a 503, retried with back-off
        assert answer.text == local_llm.complete(messages, max_tokens=8).text
        assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
        assert server.attempts == 3
        windows = [Window("top", ("x", " ]", ")"), (0.0, 1.0, 2.0), (True,) * 3),
                   Window("random", ("import", " os"), (0.0, 0.0), (True, True)),
                   Window("random", ("a", " =", " 1"), (0.0, 0.0, 0.0), (True,) * 3)]
        chats = [prompts.detect("closing brackets", w) for w in windows]
        far, _ = remote.choice_probs(chats, prompts.YES_NO)
        near, _ = local_llm.choice_probs(chats, prompts.YES_NO)
        for (f_yes, f_no), (n_yes, _) in zip(far, near):
            assert f_yes + f_no == pytest.approx(1.0) and f_yes == pytest.approx(n_yes, abs=0.02)
        assert server.peak >= 2 and remote.peak_concurrency == 3  # requests were in flight together
        jobs = [prompts.simulate("closing brackets", w) for w in windows[:1]]
        levels, _ = remote.slot_probs([m for m, _ in jobs], [s for _, s in jobs], prompts.LEVELS)
        assert len(levels[0]) == 3 and all(sum(p) == pytest.approx(1.0) for p in levels[0])
        remote.close()
    finally:
        server.shutdown()


def test_an_unreachable_endpoint_is_one_line(db_url, monkeypatch, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    url = f"http://127.0.0.1:{port}/v1"
    remote = EndpointLLM(url, "m", None, retries=0, timeout=5)
    with pytest.raises(MonoscopeError, match=f"cannot reach the LLM endpoint {url}"):
        remote.complete([{"role": "user", "content": "hi"}], max_tokens=1)
    monkeypatch.setenv("MONOSCOPE_LLM_RETRIES", "0")
    result = monoscope(monkeypatch, capsys, "autointerp", "--bases", "neurons", "--per-basis", "1", "--force",
                       "--llm", f"openai:m@{url}", "--db", db_url)
    assert_one_line_error(result, f"cannot reach the LLM endpoint {url}")


def test_pages_and_twins_show_the_explanations(explained, db_url, analysed_run):
    """The results page shows both distributions and its twin the same numbers; the unit page and its twin show the
    explanation and its scores; the unit list finds a unit by its explanation; an explanation with markup is
    escaped everywhere."""
    from markupsafe import escape
    from webapp_fixtures import start_server, stop_server

    from app.store.db import session_factory, write_transaction
    from app.store.models import Basis, Explanation, utc_now

    with session_factory(db_url)() as session:
        row = session.scalar(select(Explanation).join(Basis, Basis.id == Explanation.basis_id)
                             .where(Basis.name == SAE_NAME))
        index, text = row.unit_index, row.text
    site = start_server(db_url, analysed_run)
    try:
        twin = site.get("/api/v1/autointerp").json()
        assert [b["basis"] for b in twin["bases"]] == ["neurons", SAE_NAME]
        assert {b["n_units"] for b in twin["bases"]} == {1}
        assert "smoke test" in twin["note"] and len(twin["units"]) == 2
        page = site.get("/autointerp").text
        assert "smoke test" in page and 'id="scores-plot"' in page and str(escape(text)) in page
        for u in twin["units"]:  # the page's table holds the twin's scores
            assert f'{u["basis"]} #{u["index"]}' in page
        unit = site.get(f"/api/v1/bases/{SAE_NAME}/units/{index}").json()
        assert unit["explanations"][0]["text"] == text and unit["explanations"][0]["small_model"]
        assert {s["scorer"] for s in unit["explanations"][0]["scores"]} == {"simulation", "detection", "fuzzing",
                                                                           "logits"}
        assert unit["explanations"][0]["examples"]
        page = site.get(f"/bases/{SAE_NAME}/units/{index}").text
        assert 'id="explanations"' in page and "smoke test" in page
        word = max(text.split(), key=len).lower()
        found = site.get(f"/api/v1/bases/{SAE_NAME}", params={"q": word, "per_page": 500}).json()
        assert index in [u["index"] for u in found["units"]]
        assert next(u for u in found["units"] if u["index"] == index)["explanation"] == text
        assert site.get("/api/v1/autointerp", params={"llm": "nobody"}).status_code == 404
        # live inference names each active unit by its label, else its explanation, else its top tokens
        current = {(u["basis"], u["index"]): u["explanation"] for u in twin["units"]}
        active = site.get("/api/v1/infer", params={"text": "def f(x):\n    return x < 1 and y > 2"}).json()
        assert active["active_units"]
        for a in active["active_units"]:
            assert a["explanation"] == current.get((a["basis"], a["index"])) and a["top_tokens"]
        # a language model's answer is data: markup in it is escaped on every page
        evil = "<script>explained('x')</script> & \"quotes\""  # the tiny corpus holds <script>alert(...
        with write_transaction(session_factory(db_url)) as session:  # as a new explanation is written (app/store)
            changed = session.get(Explanation, row.id)
            changed.text, changed.created = evil, utc_now()
        for path in (f"/bases/{SAE_NAME}/units/{index}", "/autointerp", f"/bases/{SAE_NAME}?q=explained"):
            body = site.get(path).text
            assert "<script>explained" not in body and "&lt;script&gt;explained(" in body, path
    finally:
        stop_server(site)
        with write_transaction(session_factory(db_url)) as session:  # the module's other tests see the model's text
            session.get(Explanation, row.id).text = text


def test_the_export_holds_the_explanations_and_their_scores(explained, db_url, tmp_path, monkeypatch, capsys):
    import json

    from app.store.db import session_factory
    from app.store.models import Basis, Explanation, ExplanationScore

    code, out, err = monoscope(monkeypatch, capsys, "export", "basis", "--basis", SAE_NAME, "--out", tmp_path,
                               "--db", db_url)
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "explanations.jsonl").read_text().splitlines()]
    with session_factory(db_url)() as session:
        stored = session.scalar(select(Explanation).join(Basis, Basis.id == Explanation.basis_id)
                                .where(Basis.name == SAE_NAME))
        scores = {s.scorer: s.score for s in session.scalars(
            select(ExplanationScore).where(ExplanationScore.explanation_id == stored.id))}
    assert len(rows) == 1 and rows[0]["text"] == stored.text and rows[0]["index"] == stored.unit_index
    assert {k: rows[0][k] for k in scores} == scores and rows[0]["llm"] == stored.model


def test_reviewers_hypotheses_are_scored_by_the_same_scorers(explained, db_url, monkeypatch, capsys):
    """A closed review's hypotheses are scored as explanations of model review:<rater>, beside the language model's,
    and the results page sets their distributions apart; an open review's stay out (its items are blind)."""
    from app.store.db import session_factory, write_transaction
    from app.store.models import Basis, Explanation, ExplanationScore, ReviewUnit
    from app.store.reviews import Answer, close_review, create_review, save_score
    from app.store.users import add_user

    sessions = session_factory(db_url)
    with write_transaction(sessions) as session:
        rater, _ = add_user(session, "ada")
        bases = list(session.scalars(select(Basis).order_by(Basis.name)))
        review = create_review(session, name="auto", bases=bases, per_basis=1, creator=None, seed=3)
        items = list(session.scalars(select(ReviewUnit).where(ReviewUnit.review_id == review.id)))
        for k, item in enumerate(items):
            answer = Answer(f"<b>closing</b> & brackets {k}", {"confidence": 2, "token_consistency": 3,
                                                                "logit_consistency": 1, "effect_gap": 0,
                                                                "specificity": 2})
            save_score(session, review, item, rater, answer, 11)
        open_units = {(i.basis_id, i.unit_index) for i in items}
    args = ["autointerp", "--bases", f"neurons,{SAE_NAME}", "--per-basis", "1", "--mix", SMALL_MIX, "--hypotheses",
            "--db", db_url]
    code, out, err = monoscope(monkeypatch, capsys, *args)
    assert code == 0 and "0 explained, 0 scores" in out, out + err  # open review: nothing of it is scored
    with write_transaction(sessions) as session:
        close_review(session, session.merge(review), None)
    code, out, err = monoscope(monkeypatch, capsys, *args)
    assert code == 0 and "0 explained, 8 scores" in out, out + err
    with sessions() as session:
        said = list(session.scalars(select(Explanation).where(Explanation.model == "review:ada")))
        assert {(e.basis_id, e.unit_index) for e in said} == open_units
        assert all(e.text.startswith("<b>closing</b>") and e.prompt_version == "human" for e in said)
        n_scores = session.scalar(select(func.count(ExplanationScore.id))
                                  .where(ExplanationScore.explanation_id.in_([e.id for e in said])))
    assert n_scores == 8
    from app.read.queries.explanations import autointerp_results

    with sessions() as session:
        results = autointerp_results(session=session, model=None, llm=None)
    assert sorted(b.basis for b in results.hypotheses) == ["neurons", SAE_NAME]
    assert all(u.model != "review:ada" for u in results.units)  # the language model's explanations only
    rated = {(b.name, i) for b in bases for basis_id, i in open_units if basis_id == b.id}
    explained_units = {(u.basis, u.index) for u in results.units}
    assert {(u.basis, u.index) for u in results.units if u.human_total is not None} == rated & explained_units
