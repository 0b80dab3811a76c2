"""Library output goes to the log file, not the screen: run in a fresh interpreter, as each program starts."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import logging, warnings
from routesh.logs import keep_libraries_quiet, quiet_transformers
keep_libraries_quiet()
warnings.warn("a deprecated argument", FutureWarning)
quiet_transformers()
from transformers.utils import logging as hf_logging
hf_logging.get_logger("transformers.generation").warning("past_key_values is deprecated")
for _ in hf_logging.tqdm(range(3), desc="Writing model shards"):
    pass
print("routesh's own output")
"""


def _run(tmp_path, **env):  # noqa: ANN003, ANN202
    log = tmp_path / "state" / "routesh.log"
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ROUTESH_LOG": str(log), "ROUTESH_DEBUG": "", **env})
    assert done.returncode == 0, done.stderr
    return done, log.read_text() if log.exists() else ""


def test_warnings_logs_and_progress_bars_go_to_the_file(tmp_path):
    done, log = _run(tmp_path)
    assert done.stdout == "routesh's own output\n"
    assert done.stderr == ""
    assert "FutureWarning: a deprecated argument" in log and "past_key_values is deprecated" in log
    assert "Writing model shards" not in log + done.stderr  # the bar is off, not moved


def test_routesh_debug_shows_them_on_stderr_too_and_names_the_file(tmp_path):
    done, log = _run(tmp_path, ROUTESH_DEBUG="1")
    assert f"routesh: library messages also go to {tmp_path / 'state' / 'routesh.log'}" in done.stderr
    assert "past_key_values is deprecated" in done.stderr and "past_key_values is deprecated" in log
