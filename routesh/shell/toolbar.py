"""The bottom toolbar: database · model and backend · RO/RW · stages · what is running now."""

from __future__ import annotations

from prompt_toolkit.formatted_text import StyleAndTextTuples

from routesh.shell.busy import spinner_frame
from routesh.shell.session import ShellSession


def toolbar(session: ShellSession) -> StyleAndTextTuples:
    writes = session.db.writes_allowed
    model = session.model.label()
    parts: StyleAndTextTuples = [
        ("class:bottom-toolbar", f" {session.database_name} ({'PostgreSQL' if session.db.dialect == 'postgres' else 'SQLite'}) "),
        ("class:bottom-toolbar", "│ "),
        ("class:bottom-toolbar.model", f"{model} "),
        ("class:bottom-toolbar", "│ "),
        ("class:bottom-toolbar.rw" if writes else "class:bottom-toolbar.ro", "RW" if writes else "RO"),
        ("class:bottom-toolbar", f" │ stages {session.stages.label()} view {'on' if session.show_stages else 'off'} "),
    ]
    if session.output.file_name:
        parts.append(("class:bottom-toolbar", f"│ \\o {session.output.file_name} "))
    busy = session.running or ("loading the model" if session.model.state == "loading" else "")
    if busy:
        parts.append(("class:bottom-toolbar.busy", f"│ {spinner_frame()} {busy} "))
    return parts
