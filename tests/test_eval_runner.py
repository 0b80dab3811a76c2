"""routesh-eval's runner: sampling, receipts, resume and the summary (scripted engine, real Spider DBs)."""

from __future__ import annotations

import json
import re
import threading
import time

import psycopg
import pytest

from routesh.evaluate.datasets import load_spider
from routesh.evaluate.runner import evaluate, load_receipts, sample
from routesh.pipeline.options import PipelineOptions
from routesh.pipeline.stages import StageConfig
from tests.test_pipeline import ScriptedEngine


class GoldEngine(ScriptedEngine):
    """Answers each question with its gold SQL (looked up by question), or a wrong query for some."""

    def __init__(self, examples, wrong: set[int]):
        super().__init__()
        self.by_question = {ex.question: (ex.index, ex.gold_sql) for ex in examples}
        self.wrong = wrong

    def generate(self, requests, params=None, *, cancel=None):
        from routesh.engine.base import Completion

        out = []
        for request in requests:
            self.calls.append(("ts", request, params))
            user = request.messages[-1].content
            question = user.split("\n", 1)[0].removeprefix("Question: ")
            index, gold = self.by_question[question]
            sql = "SELECT 1" if index in self.wrong else gold
            out.append(Completion(f"```sql\n{sql}\n```", 50, 5, "stop", 0.01))
        return out


def test_sample_is_seeded_and_skips_missing_databases():
    examples = load_spider("spider-dev")
    picked = sample(examples, limit=25, seed=7)
    assert picked == sample(examples, limit=25, seed=7)
    assert picked != sample(examples, limit=25, seed=8)
    assert len(picked) == 25 and all(ex.db_path is not None for ex in picked)
    assert [ex.index for ex in picked] == sorted(ex.index for ex in picked)
    assert len(sample(examples, limit=None, seed=None)) == 972  # wta_1 is missing


def test_runs_writes_receipts_resumes_and_summarises(tmp_path):
    examples = sample(load_spider("spider-dev"), limit=12, seed=3)
    wrong = {examples[0].index, examples[5].index}
    out = tmp_path / "receipts.jsonl"
    options = PipelineOptions(stages=StageConfig.parse("ts"))

    first = evaluate(examples[:8], GoldEngine(examples, wrong), options=options, out=out)
    assert first.total == 8
    with out.open("a") as handle:
        handle.write('{"index": 99999, "truncated by a cra')  # a crash mid-line
    engine = GoldEngine(examples, wrong)
    summary = evaluate(examples, engine, options=options, out=out)
    asked = {r.messages[-1].content.split("\n", 1)[0] for _, r, _ in engine.calls}
    assert len(asked) == 4  # only the 4 questions without a receipt were asked again
    assert summary.total == 12 and summary.correct == 10 and summary.accuracy == 10 / 12
    assert sum(n for _, n in summary.by_hardness.values()) == 12
    receipts = load_receipts(out)
    assert list(receipts) == [ex.index for ex in examples]  # one job at a time: written in the data set's order
    record = receipts[examples[0].index]
    assert record.correct is False and record.predicted_sql == "SELECT 1" and record.stages == "ts"
    assert [e["stage"] for e in record.events] == ["ts", "execute", "final"]
    lines = out.read_text().splitlines()
    assert len(lines) == 13  # 12 receipts and the crash's broken line, which stayed on a line of its own
    assert sum(1 for line in lines if _parses(line)) == 12
    assert "execution accuracy: 83.3% (10/12)" in summary.lines()[0]


class OverlapEngine(GoldEngine):
    """GoldEngine that takes a little while per call and notes how many calls were in flight at once."""

    def __init__(self, examples, wrong, *, stop_after: int | None = None):
        super().__init__(examples, wrong)
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = self.answered = 0
        self.threads: set[int] = set()
        self.stop_after = stop_after

    def generate(self, requests, params=None, *, cancel=None):
        with self.lock:
            if self.stop_after is not None and self.answered >= self.stop_after:
                raise KeyboardInterrupt  # as Ctrl-C would land in the middle of a run
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.threads.add(threading.get_ident())
        time.sleep(0.05)
        try:
            return super().generate(requests, params)
        finally:
            with self.lock:
                self.in_flight -= 1
                self.answered += 1


def test_jobs_run_questions_at_once_and_give_the_same_receipts(tmp_path):
    examples = sample(load_spider("spider-dev"), limit=12, seed=5)
    wrong = {examples[2].index, examples[7].index}
    options = PipelineOptions(stages=StageConfig.parse("ts"))
    one = evaluate(examples, OverlapEngine(examples, wrong), options=options, out=tmp_path / "one.jsonl")
    engine = OverlapEngine(examples, wrong)
    four = evaluate(examples, engine, options=options, out=tmp_path / "four.jsonl", jobs=4)
    assert 1 < engine.most_in_flight <= 4 and len(engine.threads) <= 4
    assert four.correct == one.correct == 10 and four.total == 12

    def answers(path):
        return {i: (r.predicted_sql, r.correct, r.db_id) for i, r in load_receipts(path).items()}

    assert answers(tmp_path / "four.jsonl") == answers(tmp_path / "one.jsonl")


def test_an_interrupted_run_with_jobs_resumes_where_it_stopped(tmp_path):
    examples = sample(load_spider("spider-dev"), limit=10, seed=6)
    options = PipelineOptions(stages=StageConfig.parse("ts"))
    out = tmp_path / "r.jsonl"
    with pytest.raises(KeyboardInterrupt):
        evaluate(examples, OverlapEngine(examples, set(), stop_after=5), options=options, out=out, jobs=3)
    kept = load_receipts(out)
    assert 0 < len(kept) < 10  # what finished before the interrupt is kept, one receipt each
    engine = OverlapEngine(examples, set())
    summary = evaluate(examples, engine, options=options, out=out, jobs=3)
    assert engine.answered == 10 - len(kept) and summary.total == 10 and summary.correct == 10
    assert len(out.read_text().splitlines()) == 10


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def _routesh_eval(*args, env=None):
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("routesh-eval")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.mark.model
def test_routesh_eval_with_the_real_test_model(tmp_path, model_cache):
    out = tmp_path / "r.jsonl"
    run = _routesh_eval("--data", "spider-dev", "--model", "smollm2-135m", "--limit", "3", "--sample-seed", "1",
                        "--stages", "ts", "--jobs", "2", "--out", str(out), env={"ROUTESH_CACHE_DIR": str(model_cache)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("execution accuracy: ")
    assert "3 questions" in run.stderr and "smollm2-135m" in run.stderr and "2 questions at a time" in run.stderr
    assert "q/s" in run.stderr  # the progress bar's rate is questions per second
    receipts = load_receipts(out)
    assert len(receipts) == 3 and all(r.events[-1]["stage"] == "final" for r in receipts.values())


@pytest.mark.model
def test_ctrl_c_stops_routesh_eval_with_jobs_cleanly_and_the_run_resumes(tmp_path, model_cache):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "r.jsonl"
    args = ["--data", "spider-dev", "--model", "smollm2-135m", "--limit", "12", "--sample-seed", "2",
            "--stages", "ts", "--jobs", "3", "--out", str(out)]
    exe = Path(sys.executable).with_name("routesh-eval")
    env = {**os.environ, "ROUTESH_CACHE_DIR": str(model_cache)}
    # a test run started in the background ignores SIGINT; the child gets the default handler back
    child = subprocess.Popen([str(exe), *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                             env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (out.exists() and out.read_text().count("\n") >= 1):
        time.sleep(0.2)
    child.send_signal(signal.SIGINT)  # with questions in flight on the engine's decoding thread
    time.sleep(0.05)
    child.send_signal(signal.SIGINT)  # an impatient second Ctrl-C during the wind-down changes nothing
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr[-2000:]  # once "terminate called", 1 run in 3, from the second
    assert "routesh-eval: interrupted; the receipts so far are in" in stderr
    assert "terminate called" not in stderr and "Traceback" not in stderr
    kept = len(load_receipts(out))
    assert 1 <= kept < 12
    again = _routesh_eval(*args, env={"ROUTESH_CACHE_DIR": str(model_cache)})
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(load_receipts(out)) == 12


def test_routesh_eval_rejects_a_bad_jobs_count():
    run = _routesh_eval("--jobs", "0", "--limit", "1")
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == ["routesh-eval: --jobs must be 1 or more"]


def test_routesh_eval_rejects_an_unknown_stage():
    run = _routesh_eval("--stages", "ts,xx", "--limit", "1")
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "routesh-eval: unknown stage(s) xx; choose from values, sl, ts, vote, repair, nc, cw"]


@pytest.mark.postgres
@pytest.mark.model
def test_routesh_eval_on_postgres_defog_with_the_real_test_model(tmp_path, model_cache, pg_server, defog_db):
    defog_db("academic")  # the fixture's own copy; routesh-eval loads its defog_academic beside it
    out = tmp_path / "defog.jsonl"
    args = ("--data", "postgres-defog", "--pg-dsn", pg_server.admin_dsn, "--model", "smollm2-135m", "--limit", "2",
            "--stages", "ts", "--out", str(out))
    run = _routesh_eval(*args, env={"ROUTESH_CACHE_DIR": str(model_cache)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "postgres-defog: 2 questions" in run.stderr and "defog_academic (" in run.stderr
    lines = run.stdout.splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("execution accuracy: ")):]
    assert re.fullmatch(r"execution accuracy: \d+\.\d% \(\d/2\); abstained \d", lines[0]), lines[0]
    assert "  by category:" in lines
    assert any(line.startswith("  group_by") and line.rstrip().endswith("/2)") for line in lines)
    assert not any(line.lstrip().startswith(("easy", "medium", "hard", "extra")) for line in lines)
    receipts = load_receipts(out)
    assert sorted(receipts) == [0, 1]
    for r in receipts.values():
        assert r.db_id == "academic" and r.category == "group_by" and r.stages == "ts"
        assert r.alternatives >= 3 and isinstance(r.correct, bool) and isinstance(r.correct_subset, bool)
        assert r.correct or r.matched_alternative is None
        assert r.events and r.events[-1]["stage"] == "final"
    with psycopg.connect(pg_server.dsn("defog_academic")) as conn:  # loaded by routesh-eval, under its name
        assert conn.execute("SELECT count(*) FROM public.author").fetchone()[0] > 0
    again = _routesh_eval(*args, env={"ROUTESH_CACHE_DIR": str(model_cache)})  # resumes: nothing left to ask
    assert again.returncode == 0, again.stderr[-2000:]
    assert "defog_academic (reused)" in again.stderr and len(load_receipts(out)) == 2


def test_a_question_that_crashes_the_pipeline_is_recorded_wrong_and_the_run_goes_on(tmp_path, monkeypatch):
    import routesh.evaluate.runner as runner

    examples = sample(load_spider("spider-dev"), limit=3, seed=3)
    real_ask = runner.Pipeline.ask

    def ask(self, question, hint=None, **kwargs):
        if question == examples[1].question:
            raise RecursionError("maximum recursion depth exceeded")  # as sqlglot does on degenerate SQL
        return real_ask(self, question, hint, **kwargs)

    monkeypatch.setattr(runner.Pipeline, "ask", ask)
    out = tmp_path / "r.jsonl"
    summary = evaluate(examples, GoldEngine(examples, set()), options=PipelineOptions(stages=StageConfig.parse("ts")),
                       out=out)
    assert summary.total == 3 and summary.correct == 2 and summary.crashed == 1
    crashed = load_receipts(out)[examples[1].index]
    assert crashed.correct is False and crashed.error == "crashed: RecursionError in the pipeline"
    assert any("crashed" in line and line.rstrip().endswith(": 1") for line in summary.lines())
