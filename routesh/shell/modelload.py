"""The model loads on a background thread so that the prompt is ready at once (loading takes seconds
to minutes; SQL and commands need no model). A question asked before it is ready waits for it."""

from __future__ import annotations

import threading
from collections.abc import Callable

from routesh.engine.base import Engine
from routesh.errors import ModelError

EngineFactory = Callable[[str | None, str, Callable[[str], None]], Engine]  # (spec, backend, notify)


def _load_engine(spec: str | None, backend: str, notify: Callable[[str], None]) -> Engine:
    from routesh.engine import load_engine  # torch and transformers load here, off the prompt's path

    return load_engine(spec, backend=backend, progress=False, notify=notify)


class ModelLoader:
    """One model, loading or loaded. `\\model NAME` replaces the loader; the old engine is closed."""

    def __init__(self, spec: str | None, backend: str = "auto", factory: EngineFactory = _load_engine):
        self.spec = spec
        self.backend = backend
        self.name = _display_name(spec)
        self._factory = factory
        self._engine: Engine | None = None
        self._error: str | None = None
        self.notices: list[str] = []  # one-line notices from loading (a damaged cache rebuilt), not yet shown
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._load, name="routesh-model", daemon=True)
            self._thread.start()

    def _load(self) -> None:
        try:
            self._engine = self._factory(self.spec, self.backend, self.notices.append)
            self.name = self._engine.name
        except ModelError as err:
            self._error = str(err)
        except Exception as err:  # anything else still becomes one line in the shell, never a traceback
            self._error = f"the model failed to load: {type(err).__name__}: {err}"
        finally:
            self._done.set()

    @property
    def state(self) -> str:
        if self._thread is None:
            return "not loaded"
        if not self._done.is_set():
            return "loading"
        return "failed" if self._error else "ready"

    @property
    def error(self) -> str | None:
        return self._error

    def label(self) -> str:
        """For the toolbar: "qwen2.5-coder-0.5b · transformers", or the state while not ready."""
        if self.state == "ready" and self._engine is not None:
            return f"{self.name} · {self._engine.backend}"
        return f"{self.name} ({self.state})"

    def wait(self, timeout: float | None = None) -> Engine | None:
        """The engine once loaded; None if still loading after `timeout`. Raises ModelError if it failed."""
        self.start()
        if not self._done.wait(timeout):
            return None
        if self._error:
            raise ModelError(self._error)
        return self._engine

    def take_notices(self) -> list[str]:
        """The notices not yet shown, once."""
        taken, self.notices[:] = list(self.notices), []
        return taken

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()


def _display_name(spec: str | None) -> str:
    if not spec:
        from routesh.engine.models import DEFAULT_MODEL  # the catalog module is light: no torch

        return DEFAULT_MODEL
    return spec
