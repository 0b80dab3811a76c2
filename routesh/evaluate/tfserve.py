"""A throwaway `transformers serve` on loopback, serving a local model folder: the OpenAI-compatible
server the HTTP engine's tests and the server benchmark (bench/jobs.py --serve) talk to.

`transformers serve` loads models by hub id, so the folder is given an id in a hub cache of its own
(its files symlinked, not copied) and the server runs offline against it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from routesh.evaluate.pgserver import free_port

SNAPSHOT = "0" * 40


def hub_home(home: Path, folder: Path, model_id: str) -> Path:
    """An HF_HOME whose hub cache holds `folder` as the repo `model_id`."""
    repo = home / "hub" / ("models--" + model_id.replace("/", "--"))
    snapshot = repo / "snapshots" / SNAPSHOT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SNAPSHOT)
    for file in folder.iterdir():
        if file.is_file() and not file.name.startswith("."):
            (snapshot / file.name).symlink_to(file.resolve())
    return home


class ServeProcess:
    """One `transformers serve` process on a free loopback port, its output in a log file."""

    def __init__(self, hf_home: Path, model_id: str, log: Path, *, threads: int = 1, extra: tuple[str, ...] = ()):
        self.port = free_port()
        self.log = log
        self.model_id = model_id
        self.command = [
            sys.executable, "-m", "transformers.cli.transformers", "serve", model_id,
            "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu", "--log-level", "info", *extra,
        ]
        env = {
            **os.environ,
            "HF_HOME": str(hf_home),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            # On a small shared CPU torch's spinning OpenMP threads slow generation by 20x whenever
            # another process is busy: the tests give it one.
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
        }
        with log.open("wb") as out:
            self.proc = subprocess.Popen(self.command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.started = time.monotonic()
        self.ready_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def wait_ready(self, deadline: float) -> None:
        """Wait until the server lists its model; RuntimeError (with the log's tail) if it exits or
        the deadline (time.monotonic()) passes first."""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.proc.returncode} before it was ready:\n"
                                   f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as response:
                    if self.model_id in response.read().decode():
                        self.ready_seconds = time.monotonic() - self.started
                        return
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"transformers serve was not ready in time:\n{self.log_tail()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
