"""Where the shell's output goes: the terminal (through a pager when it is taller or wider than the
screen), or the file named by `\\o`. Messages and errors always go to the terminal."""

from __future__ import annotations

import os
import pydoc
import shutil
import sys
from pathlib import Path
from typing import TextIO

from routesh.errors import UsageError
from routesh.render import widest_line

DEFAULT_PAGER = "less -SRXF"  # -S: no wrapping of wide tables; -F: no pager for what fits; -X: keep it on screen


class Output:
    def __init__(self, pager: str = "auto"):
        self.pager = pager  # "auto" (when it does not fit) | "on" (always) | "off" | a command
        self._file: TextIO | None = None
        self.file_name: str | None = None

    def to_file(self, name: str | None) -> str:
        """`\\o FILE` starts sending results there (appending); `\\o` alone goes back to the screen."""
        if self._file is not None:
            self._file.close()
            self._file, self.file_name = None, None
        if not name:
            return "Results go to the screen."
        path = Path(name).expanduser()
        try:
            self._file = path.open("a", encoding="utf-8")
        except OSError as err:
            raise UsageError(f"cannot write to {path}: {err.strerror or err}") from None
        self.file_name = str(path)
        return f"Results go to {path} (\\o alone goes back to the screen)."

    @property
    def file(self) -> TextIO | None:
        """The \\o file that results stream into, or None for the screen."""
        return self._file

    def results(self, text: str) -> None:
        """Query results and listings: to the \\o file, else the screen, paged when they do not fit."""
        if self._file is not None:
            self._file.write(text if text.endswith("\n") else text + "\n")
            self._file.flush()
            return
        command = self._pager_for(text)
        if command:
            try:
                pydoc.pipepager(text, command)
                return
            except (OSError, KeyboardInterrupt):
                pass  # a missing or interrupted pager: fall back to printing
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()

    def _pager_for(self, text: str) -> str | None:
        if self.pager == "off" or not sys.stdout.isatty():
            return None
        size = shutil.get_terminal_size((80, 24))
        if self.pager in ("auto", "on"):
            if self.pager == "auto" and text.count("\n") < size.lines - 2 and widest_line(text) <= size.columns:
                return None
            command = os.environ.get("PAGER") or DEFAULT_PAGER
        else:
            command = self.pager
        return command if shutil.which(command.split()[0]) else None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
