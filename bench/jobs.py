"""The same questions with `routesh-eval --jobs 1, 2, 4, …`, side by side: questions/s, peak memory,
EX, and the questions whose final SQL changed against --jobs 1.

    ROUTESH_CACHE_DIR=~/.cache/routesh python bench/jobs.py --limit 100 --jobs 1 2 4 8 --out-dir /tmp/jobs
    python bench/jobs.py --model http://127.0.0.1:8000/v1 --limit 20 --jobs 1 8 --out-dir /tmp/serve
    python bench/jobs.py --serve --limit 20 --jobs 1 8 --out-dir /tmp/serve   # a local `transformers serve`

Each --jobs value is one routesh-eval process (a fresh engine: no prefix cached from the run before),
run one after the other on the same seeded sample; its wall time and peak resident memory (the
process's own, from wait4) are kept beside its receipts in --out-dir, so an interrupted benchmark
resumes with the runs it has not finished. Wall time includes loading the model (a few seconds).
--serve starts a `transformers serve` of the embedded model (routesh/evaluate/tfserve.py, with every
core; add --serve-arg=--continuous-batching to try its own batching) and points the runs at it; the
peak memory is then routesh-eval's, not the server's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def run_one(args: argparse.Namespace, jobs: int) -> dict:
    timing = args.out_dir / f"jobs-{jobs}.json"
    if timing.exists():
        return json.loads(timing.read_text())
    receipts = args.out_dir / f"jobs-{jobs}.jsonl"
    receipts.unlink(missing_ok=True)  # a half-done run's timing is lost: start it again
    exe = Path(sys.executable).with_name("routesh-eval")
    command = [str(exe), "--data", args.data, "--limit", str(args.limit), "--sample-seed", str(args.sample_seed),
               "--stages", args.stages, "--jobs", str(jobs), "--out", str(receipts)]
    if args.model:
        command += ["--model", args.model]
    print("+", " ".join(command), file=sys.stderr, flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    summary = process.stdout.read() if process.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"routesh-eval --jobs {jobs} failed")
    result = {"jobs": jobs, "wall_seconds": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024),
              "summary": summary.splitlines()[0] if summary else ""}
    timing.write_text(json.dumps(result))
    return result


@contextlib.contextmanager
def local_server(scratch: Path, extra: tuple[str, ...]) -> Iterator[str]:
    """A `transformers serve` of the embedded model; yields the URL routesh-eval gets as --model."""
    from routesh.engine.models import DEFAULT_MODEL, materialize
    from routesh.evaluate.tfserve import ServeProcess, hub_home

    model_id = f"routesh/{DEFAULT_MODEL}"
    home = scratch / "hf-home"
    if not home.exists():
        hub_home(home, materialize(DEFAULT_MODEL), model_id)
    server = ServeProcess(home, model_id, scratch / "serve.log", threads=os.cpu_count() or 1, extra=extra)
    try:
        server.wait_ready(time.monotonic() + 300)
        print(f"transformers serve ready at {server.url} ({server.ready_seconds:.0f} s)", file=sys.stderr)
        yield f"{server.url}#{model_id}"
    finally:
        server.stop()


def final_sql(path: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["index"]: r for r in rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="spider-dev")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--sample-seed", type=int, default=7)
    parser.add_argument("--stages", default="sl,nc,cw")
    parser.add_argument("--model", help="as routesh-eval --model (default: the embedded model)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--serve", action="store_true", help="start a local `transformers serve` and use it")
    parser.add_argument("--serve-arg", action="append", default=[], help="more arguments for transformers serve")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if args.serve:
            args.model = stack.enter_context(local_server(args.out_dir, tuple(args.serve_arg)))
        results = [run_one(args, jobs) for jobs in args.jobs]

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.data}, {args.limit} questions "
          f"(seed {args.sample_seed}), stages {args.stages}, model {args.model or 'the embedded default'}")
    print("| --jobs | wall s | questions/s | × --jobs 1 | peak RSS MB | EX |")
    print("|---:|---:|---:|---:|---:|---|")
    base = results[0]
    for r in results:
        rate = args.limit / r["wall_seconds"]
        print(f"| {r['jobs']} | {r['wall_seconds']} | {rate:.3f} | {base['wall_seconds'] / r['wall_seconds']:.2f} "
              f"| {r['peak_rss_mb']} | {r['summary'].removeprefix('execution accuracy: ')} |")
    first = final_sql(args.out_dir / f"jobs-{base['jobs']}.jsonl")
    for r in results[1:]:
        other = final_sql(args.out_dir / f"jobs-{r['jobs']}.jsonl")
        changed = [i for i in sorted(first) if i in other and (first[i]["predicted_sql"], first[i]["correct"])
                   != (other[i]["predicted_sql"], other[i]["correct"])]
        print(f"--jobs {r['jobs']}: {len(changed)} question(s) with another final SQL or verdict than --jobs {base['jobs']}")
        for i in changed:
            print(f"  #{i} {first[i]['question']}\n    --jobs {base['jobs']}: {first[i]['predicted_sql']}"
                  f" ({'right' if first[i]['correct'] else 'wrong'})\n"
                  f"    --jobs {r['jobs']}: {other[i]['predicted_sql']} ({'right' if other[i]['correct'] else 'wrong'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
