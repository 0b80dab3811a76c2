"""Long work (a question going through the pipeline, a query) runs on a worker thread while a small
full-screen-less prompt-toolkit application shows a spinner naming the running stage, the lines the
work prints (the \\stages view), and the bottom toolbar. Ctrl-C there is a key press, not a signal:
it calls `cancel` and the work ends with its own Cancelled error, so the shell never half-dies."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from prompt_toolkit.application import Application
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import FormattedText, StyleAndTextTuples
from prompt_toolkit.input.typeahead import get_typeahead, store_typeahead
from prompt_toolkit.key_binding import KeyBindings, KeyPress
from prompt_toolkit.keys import Keys
from prompt_toolkit.layout import ConditionalContainer, HSplit, Layout, Window
from prompt_toolkit.layout.controls import FormattedTextControl
from prompt_toolkit.styles import BaseStyle

T = TypeVar("T")
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def spinner_frame(since: float = 0.0) -> str:
    """The spinner's frame now: ten a second, counted from `since` (a time.monotonic() value)."""
    return SPINNER[int((time.monotonic() - since) * 10) % len(SPINNER)]


class BusyView(Generic[T]):
    """`replay_enter=False` keeps type-ahead text but not its Enter: after a question the next prompt holds
    generated SQL, and nothing typed before the user saw it may run it."""

    def __init__(self, work: Callable[["BusyView[T]"], T], *, cancel: Callable[[], None],
                 toolbar: Callable[[], StyleAndTextTuples] | None, style: BaseStyle, replay_enter: bool = True):
        self._work = work
        self._cancel = cancel
        self._lines: list[StyleAndTextTuples] = []
        self._lock = threading.Lock()
        self.label = "working"
        self.cancelling = False
        self._started = time.monotonic()
        self._outcome: dict[str, object] = {}
        self._done = False
        self._typed: list[KeyPress] = []
        keys = KeyBindings()

        @keys.add("c-c")
        @keys.add("c-d")
        def _(event) -> None:  # noqa: ANN001 - prompt-toolkit's event type
            if not self.cancelling:
                self.cancelling = True
                self._cancel()

        @keys.add(Keys.Any)
        def _(event) -> None:  # noqa: ANN001 - type-ahead: kept for the next prompt, as psql keeps it
            self._typed.extend(k for k in event.key_sequence if replay_enter or k.key not in (Keys.ControlM,
                                                                                             Keys.ControlJ))

        spinner = Window(FormattedTextControl(self._spinner_text), height=1)
        lines = Window(FormattedTextControl(self._lines_text), dont_extend_height=True, wrap_lines=False)
        parts = [lines, ConditionalContainer(spinner, filter=Condition(lambda: not self._done))]
        if toolbar is not None:
            bar = Window(FormattedTextControl(toolbar), height=1, style="class:bottom-toolbar")
            parts.append(ConditionalContainer(bar, filter=Condition(lambda: not self._done)))
        self._app: Application = Application(layout=Layout(HSplit(parts)), key_bindings=keys, style=style,
                                             refresh_interval=0.1, erase_when_done=False)

    # called from the worker thread
    def set_label(self, label: str) -> None:
        self.label = label
        self._app.invalidate()

    def add_line(self, line: FormattedText) -> None:
        with self._lock:
            self._lines.append(list(line))
        self._app.invalidate()

    def _spinner_text(self) -> StyleAndTextTuples:
        frame = spinner_frame(self._started)
        elapsed = time.monotonic() - self._started
        what = "cancelling…" if self.cancelling else f"{self.label}…"
        return [("class:spinner", f"{frame} "), ("", what), ("class:stage.cost", f"  {elapsed:.1f} s  (Ctrl-C cancels)")]

    def _lines_text(self) -> StyleAndTextTuples:
        with self._lock:
            return [fragment for line in self._lines for fragment in line]

    def run(self) -> T:
        def worker() -> None:
            try:
                self._outcome["value"] = self._work(self)
            except BaseException as err:  # handed back to the shell's thread
                self._outcome["error"] = err
            finally:
                self._done = True
                loop = self._app.loop
                if loop is not None and self._app.is_running:
                    loop.call_soon_threadsafe(self._exit)

        def start() -> None:
            threading.Thread(target=worker, name="routesh-work", daemon=True).start()

        self._app.run(pre_run=start)
        if self._typed:  # the next prompt-toolkit application on this terminal reads them first
            store_typeahead(self._app.input, self._typed + get_typeahead(self._app.input))
        if "error" in self._outcome:
            raise self._outcome["error"]  # type: ignore[misc]
        return self._outcome["value"]  # type: ignore[return-value]

    def _exit(self) -> None:
        if not self._app.is_done:
            self._app.exit()
