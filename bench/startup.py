"""Time to the first prompt: routesh next to litecli (SQLite) and pgcli (PostgreSQL), side by side.

    pip install litecli pgcli          # anywhere on PATH, or pass --litecli/--pgcli paths
    python bench/startup.py            # SQLite: the demo database
    python bench/startup.py --start-pg # also PostgreSQL, on a throwaway server (routesh/evaluate/pgserver.py)

Each run starts the program in a pseudo-terminal (pexpect, 100x30) with a fresh HOME that already holds
its config file (so first-run set-up is not timed), and stops the clock when the prompt is on screen.
The tools run interleaved, --repeat times each; the medians are reported. routesh starts loading its
model with the first prompt, on a background thread (several seconds), so the prompt it is timed to is
the one a user gets while the model is still loading. Set ROUTESH_CACHE_DIR to where the converted model
already is, or each fresh HOME converts it again in the background.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pexpect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model  # noqa: E402


def time_to_prompt(argv: list[str], prompt: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    child = pexpect.spawn(argv[0], argv[1:], env=env, encoding="utf-8", timeout=60, dimensions=(30, 100))
    try:
        child.expect(prompt)
        return time.perf_counter() - started
    finally:
        child.sendcontrol("d")
        child.expect(pexpect.EOF, timeout=30)
        child.close()


def fresh_home(root: Path, name: str) -> dict[str, str]:
    home = root / name
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(home), "ROUTESH_CONFIG": str(home / "routesh.toml"),
           "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local/share"),
           "TERM": "xterm-256color", "PAGER": "cat"}
    return env


def measure(tools: dict[str, tuple[list[str], str]], env_root: Path, repeat: int) -> dict[str, list[float]]:
    envs = {name: fresh_home(env_root, name) for name in tools}
    for name, (argv, prompt) in tools.items():  # first run writes configs and warms the disk cache
        time_to_prompt(argv, prompt, envs[name])
    runs: dict[str, list[float]] = {name: [] for name in tools}
    for _ in range(repeat):
        for name, (argv, prompt) in tools.items():
            runs[name].append(time_to_prompt(argv, prompt, envs[name]))
    return runs


def report(title: str, runs: dict[str, list[float]]) -> None:
    base = statistics.median(runs["routesh"])
    print(f"\n{title}")
    for name, values in runs.items():
        median = statistics.median(values)
        ratio = "" if name == "routesh" else f"  ({median / base:.2f}x routesh's)"
        print(f"  {name:8} median {median * 1000:7.0f} ms  min {min(values) * 1000:6.0f}  max {max(values) * 1000:6.0f}"
              f"  over {len(values)} runs{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--routesh", default=shutil.which("routesh") or "routesh")
    parser.add_argument("--litecli", default=shutil.which("litecli"))
    parser.add_argument("--pgcli", default=shutil.which("pgcli"))
    parser.add_argument("--start-pg", action="store_true", help="also PostgreSQL, on a throwaway server")
    parser.add_argument("--against", metavar="EXECUTABLE",
                        help="another routesh (e.g. a wrapper running an older checkout), timed beside this one")
    args = parser.parse_args()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, python {platform.python_version()}")
    from routesh.demo import ensure_demo_db  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        demo = ensure_demo_db(root)
        tools = {"routesh": ([args.routesh, str(demo)], r"demo\.sqlite>")}
        if args.against:
            tools["against"] = ([args.against, str(demo)], r"demo\.sqlite>")
        if args.litecli:
            tools["litecli"] = ([args.litecli, str(demo)], r"demo\.sqlite>")
        report(f"SQLite ({demo.name}): time to the first prompt", measure(tools, root / "sqlite", args.repeat))
        with contextlib.ExitStack() as stack:
            if args.start_pg:
                from routesh.evaluate.pgserver import start_server  # noqa: PLC0415

                server = stack.enter_context(start_server())
                dsn = server.create_database("bench_startup", sql_text="CREATE TABLE t (id int primary key, name text);")
                tools = {"routesh": ([args.routesh, dsn], r"bench_startup>")}
                if args.pgcli:
                    tools["pgcli"] = ([args.pgcli, dsn], r"bench_startup>")
                report("PostgreSQL: time to the first prompt", measure(tools, root / "pg", args.repeat))


if __name__ == "__main__":
    main()
