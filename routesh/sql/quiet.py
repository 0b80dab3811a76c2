"""Silence sqlglot's logger around parsing: it warns on odd input (Command fallbacks, unsupported
syntax), model replies are full of odd input, and every caller reports failures itself."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_sqlglot() -> Iterator[None]:
    logger = logging.getLogger("sqlglot")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
