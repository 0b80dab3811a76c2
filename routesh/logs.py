"""Nothing but routesh on the screen: what the libraries say (Python warnings, the logging of transformers, peft,
accelerate, huggingface_hub, their progress bars, tokenizers' fork notice) goes to a log file in the user state
directory instead. With ROUTESH_DEBUG=1 it is shown on stderr as well, and the file is named there.

`keep_libraries_quiet()` runs first in each program (routesh, routesh-eval); `quiet_transformers()` where
transformers is imported (loading or converting a model), since transformers logs through a handler of its own.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import platformdirs

LOG_ENV = "ROUTESH_LOG"  # another file, e.g. for a test
_DEFAULTS = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",  # else the Rust side prints a fork warning straight to stderr
    "HF_HUB_VERBOSITY": "error",  # huggingface_hub, like transformers, has a stderr handler of its own
}
_HANDLER_NAME = "routesh-log"


def log_path() -> Path:
    configured = os.environ.get(LOG_ENV)
    return Path(configured).expanduser() if configured else Path(platformdirs.user_state_dir("routesh")) / "routesh.log"


def debugging() -> bool:
    return os.environ.get("ROUTESH_DEBUG", "") not in ("", "0")


def keep_libraries_quiet() -> Path:
    """Route library output to the log file (once per process); the file's path."""
    path = log_path()
    root = logging.getLogger()
    if any(h.get_name() == _HANDLER_NAME for h in root.handlers):
        return path
    for name, value in _DEFAULTS.items():
        os.environ.setdefault(name, value)
    handler = _file_handler(path)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)  # warnings.warn → the "py.warnings" logger → the file, not stderr
    if debugging():
        root.addHandler(logging.StreamHandler(sys.stderr))
        print(f"routesh: library messages also go to {path}", file=sys.stderr)
    return path


def quiet_transformers() -> None:
    """transformers' own stderr handler off, its records to the file, its progress bars off."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    hf_logging.set_verbosity_warning()  # the file gets its warnings; the screen never does
    hf_logging.disable_progress_bar()


@contextlib.contextmanager
def stderr_to_log() -> Iterator[None]:
    """File descriptor 2 goes to the log file for the block: for output no switch turns off (transformers'
    GGUF conversion draws a bare tqdm bar; native code prints). Not with ROUTESH_DEBUG=1."""
    if debugging():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        try:
            log_path().parent.mkdir(parents=True, exist_ok=True)
            with open(log_path(), "ab") as log:
                os.dup2(log.fileno(), 2)
        except OSError:
            pass  # no log file: the output stays where it was
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _file_handler(path: Path) -> logging.Handler:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return logging.handlers.RotatingFileHandler(path, maxBytes=1 << 20, backupCount=1, encoding="utf-8", delay=True)
    except OSError:  # an unwritable state dir must not stop the program: drop the messages instead
        return logging.NullHandler()
