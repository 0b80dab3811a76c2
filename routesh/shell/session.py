"""The one object an interactive session lives in: the connection, the settings the user can change,
the model, the schema, and what the last question produced. Commands receive it; nothing is global."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prompt_toolkit import print_formatted_text
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.styles import BaseStyle

from routesh.db import Database, ExecOptions, Result
from routesh.db.schema import Schema
from routesh.db.values import ValueIndex
from routesh.conversation import Conversation
from routesh.memory import QueryMemory, SchemaMemory, schema_fingerprint
from routesh.pipeline.options import SCHEMA_SAMPLES
from routesh.pipeline.stages import Answer, StageConfig
from routesh.shell.modelload import ModelLoader
from routesh.shell.output import Output



@dataclass
class ShellSession:
    db: Database
    model: ModelLoader
    style: BaseStyle
    output: Output = field(default_factory=Output)
    options: ExecOptions = field(default_factory=ExecOptions)
    fmt: str = "table"
    expanded: str = "off"  # psql's \x: off | on | auto
    timing: bool = False
    stages: StageConfig = field(default_factory=StageConfig)
    show_stages: bool = False
    named_queries: dict[str, str] = field(default_factory=dict)  # as in the config file; \n saves to both
    memory: QueryMemory | None = None  # remembered queries (None: the memory setting is off)
    conversation: Conversation = field(default_factory=Conversation)  # the topic a follow-up question continues
    # what the last question left behind, for \why, \retry and \e
    last_question: str | None = None
    last_answer: Answer | None = None
    last_sql: str | None = None
    last_result: Result | None = None  # the last result shown on the screen, for \chart
    prefill: str = ""  # text the next prompt starts with (generated SQL waiting for Enter)
    prefilled_question: str | None = None  # the question whose SQL the prefill is, to remember once it runs
    running: str = ""  # what is working right now, for the toolbar's spinner
    read_line: Callable[[str], str] = input  # the app swaps in a prompt-toolkit prompt (typed confirmations)
    completer: object | None = None  # SqlCompleter; typed loosely so that this module stays light
    # one statement at a time on the connection: the background schema refresh shares it
    db_lock: threading.RLock = field(default_factory=threading.RLock)
    _schema: Schema | None = None
    _schema_ready: threading.Event = field(default_factory=threading.Event)
    _values: ValueIndex | None = None

    # ---- the schema, introspected in the background and after DDL ---------------------------------

    def refresh_schema(self) -> threading.Thread:
        self._schema_ready.clear()
        thread = threading.Thread(target=self._introspect, name="routesh-schema", daemon=True)
        thread.start()
        return thread

    def _introspect(self) -> None:
        try:
            with self.db_lock:
                schema = self.db.introspect(samples=SCHEMA_SAMPLES)
            self._schema = schema
            if self.completer is not None:
                self.completer.set_schema(schema)  # type: ignore[attr-defined]
        except Exception:  # a dropped connection: the next statement reports it and reconnects
            pass
        finally:
            self._schema_ready.set()

    def schema(self, wait: bool = True) -> Schema | None:
        """The introspected schema; waits for a refresh in flight unless `wait` is False. Introspects
        in this thread when no refresh ever succeeded (raises the database's error if it fails)."""
        if wait:
            self._schema_ready.wait()
        if self._schema is None and wait:
            with self.db_lock:
                self._schema = self.db.introspect(samples=SCHEMA_SAMPLES)
        return self._schema

    def value_index(self, schema: Schema) -> ValueIndex:
        """The stored values the `values` stage matches questions to, kept across questions and built
        anew when the schema was read anew (after DDL or writes)."""
        if self._values is None or self._values.schema is not schema:
            self._values = ValueIndex(schema)
        return self._values

    # ---- remembered queries ----------------------------------------------------------------------

    def schema_memory(self, schema: Schema | None = None) -> SchemaMemory | None:
        """This database's remembered queries (by its schema's fingerprint), or None when memory is off."""
        if self.memory is None:
            return None
        return self.memory.for_schema(schema_fingerprint(schema or self.schema()))

    # ---- printing --------------------------------------------------------------------------------

    def say(self, text: str, style: str = "") -> None:
        print_formatted_text(FormattedText([(style, text)]), style=self.style, file=sys.stdout)

    def error(self, text: str) -> None:
        self.say(text, "class:error")

    def show(self, text: FormattedText) -> None:
        print_formatted_text(text, style=self.style, end="", file=sys.stdout)

    @property
    def database_name(self) -> str:
        info = self.db.info
        if self.db.dialect == "sqlite":
            return Path(info.display).name
        return str(info.details.get("database") or info.display)
