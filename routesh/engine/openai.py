"""An engine for a model served elsewhere over an OpenAI-compatible HTTP API.

This is how routesh scales past one machine: point it at `vllm serve` (tensor or pipeline parallel,
multi-node through Ray), SGLang, a llama.cpp server, Ollama or `transformers serve`.

    engine = OpenAIEngine("http://gpu-box:8000/v1")            # model: the first one /v1/models lists
    engine = OpenAIEngine("http://gpu-box:8000#Qwen/Qwen2.5-Coder-7B-Instruct")   # model named in the URL

Design notes
------------
* Streaming. Every request is sent with `stream=True` (and `stream_options={"include_usage": True}`, which
  vLLM, SGLang, llama.cpp and Ollama need before they put token counts in the last chunk; servers that do
  not know the option ignore it). Streaming is what makes three things work: cancel() is immediate (a
  worker notices between two chunks and closes the connection, and the server, seeing the client gone,
  stops generating, so a cancelled question does not keep a shared GPU busy); first-token timing
  (prefill) can be measured; and stop strings are enforced here as the text arrives, so a server that
  ignores or only partly honours `stop` does not run on to max_tokens. A server that answers a streaming
  request with one JSON body anyway is accepted too.
* The SSE stream is parsed here, from the raw lines, into plain dicts (the `openai` client still builds
  the request, authenticates and maps HTTP status codes). The client's typed chunk models are lenient
  and would turn a garbage answer into an object with missing attributes far from where it went wrong;
  parsing it here lets every malformed answer become one precise line.
* Retries are ours (the client is built with max_retries=0): connection errors, timeouts, a connection
  dropped in the middle of a response, HTTP 429 and 5xx are retried with exponential backoff and jitter
  (Retry-After honoured), at most `max_retries` times and never past `timeout` seconds after the first
  attempt. Other 4xx, malformed answers and errors the server reports inside the stream are not retried.
* `timeout` is how long the server may stay silent: to connect (at most 10 s of it), to send the first
  token, or between two chunks. A generation that keeps streaming is never cut short by it.
* Concurrent callers. generate() may be called from several threads at once (`routesh-eval --jobs N` runs
  N pipelines on one engine). `concurrency` bounds the requests in flight on the whole engine, whatever
  the number of callers: every request waits for one of its slots, which are granted first come, first
  served. A call runs at most `concurrency` requests at a time, and each of its workers queues again
  after every request, so a call with many requests cannot starve the others. Waiting for a slot does
  not count against `timeout`; waiting in the server's own queue does, which is one reason to keep
  `concurrency` near what the server really runs at once: a `vllm serve` or SGLang on a GPU batches
  hundreds (raise it to about the number of callers times their requests per call), `transformers serve`
  or llama.cpp on a CPU a few. The default, DEFAULT_CONCURRENCY, covers a few questions at a time on a
  small server. load_engine(..., concurrency=N) and the constructor set it; it is fixed for the engine's
  life.
* Cancelling. A call's `cancel` token stops that call only: generate() raises GenerationCancelled at once,
  its waiting requests leave the slot queue, and the responses it is reading are hung up (their sockets
  shut down), so the server sees the client go and stops generating, and the slots are free at once.
  A request still waiting for the server's response headers lets go of its slot when they come (or
  when the server's silence exceeds `timeout`). engine.cancel() does this to every call in flight. The
  workers are daemon threads and never keep the process from exiting.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import openai

from routesh.engine.base import (ChatRequest, Completion, FinishReason, GenerationParams, Params, batch_of,
                                 truncate_at_stop)
from routesh.errors import GenerationCancelled, ModelError

if TYPE_CHECKING:
    from routesh.cancel import CancelToken

try:  # the HTTP library under the openai client: httpx2 in openai >= 3, httpx before
    import httpx2 as _http
except ImportError:  # pragma: no cover - older openai clients
    import httpx as _http  # type: ignore[no-redef]

API_KEY_ENVS = ("ROUTESH_OPENAI_API_KEY", "OPENAI_API_KEY")
DEFAULT_CONCURRENCY = 8  # requests in flight on one engine: a few questions' batches on a small server
DUMMY_API_KEY = "EMPTY"  # what vLLM and most local servers accept when they run without a key
MAX_SERVER_STOPS = 4  # the OpenAI API accepts at most 4 stop strings; the rest are enforced here
BACKOFF_BASE = 0.25  # seconds before the first retry; doubles each time, with jitter
BACKOFF_CAP = 8.0
RETRY_AFTER_CAP = 30.0
GRACE_CHUNKS = 8  # after a stop string shows up, how many more chunks to read for the usage chunk
_SNIPPET = 160

T = TypeVar("T")


def normalize_base_url(url: str) -> tuple[str, str | None]:
    """`http://host:port[/prefix][/v1][/][#model]` → (`http://host:port[/prefix]/v1`, model or None)."""
    text = url.strip()
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ModelError(f"not an http(s) URL of an OpenAI-compatible server: {text!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"
    model = parts.fragment.strip() or None
    return urlunsplit((parts.scheme.lower(), parts.netloc, path, parts.query, "")), model


class _Cancelled(Exception):
    """Internal: the call this request belongs to was cancelled or aborted."""


@dataclass(eq=False)
class _Failure(Exception):
    """One failed attempt, already worded for the user."""

    kind: str  # "connect" | "timeout" | "dropped" | "http" | "malformed" | "server"
    message: str  # the whole line
    reason: str  # the short cause, for "the first failed with: ..."
    retryable: bool
    retry_after: float | None = None

    def __str__(self) -> str:
        return self.message


@dataclass
class _Outcome:
    text: str
    prompt_tokens: int
    output_tokens: int
    finish_reason: FinishReason
    first_token_at: float | None  # monotonic time of the first generated text
    cached_prompt_tokens: int = 0
    extra: dict[str, object] = field(default_factory=dict)


class _Slots:
    """The engine's request slots: at most `size` requests in flight, whichever calls they belong to,
    granted in the order they were asked for."""

    def __init__(self, size: int):
        self.size = size
        self._free = size
        self._queue: deque[object] = deque()
        self._cond = threading.Condition(threading.RLock())  # RLock: wake() may run in a signal handler

    def acquire(self, stopping: Callable[[], bool]) -> bool:
        """Wait for a slot; False when `stopping()` turns true first (wake() makes the waiters look)."""
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                while not stopping():
                    if self._free > 0 and self._queue[0] is ticket:
                        self._free -= 1
                        return True
                    self._cond.wait()
                return False
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()  # whoever is first in line now may go

    def release(self) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class _Call:
    """The state of one generate(): its results, its first error, whether it was cancelled, and the
    responses its workers are reading (stopping the call hangs them up)."""

    def __init__(self, size: int, slots: _Slots):
        self.slots = slots
        self.results: list[_Outcome | None] = [None] * size
        self.remaining = size
        self.error: BaseException | None = None
        self.cancelled = False  # by its token or engine.cancel(), rather than ended by an error
        self.stopped = threading.Event()  # the call ends early (error, cancel, Ctrl-C) or has ended
        self.changed = threading.Event()  # wakes the waiting generate()
        self.lock = threading.RLock()  # RLock: cancel() may run in a signal handler on a thread holding it
        self.next_index = 0
        self._reading: set[Any] = set()  # HTTP responses being read

    def stopping(self) -> bool:
        return self.stopped.is_set()

    def take(self) -> int | None:
        with self.lock:
            if self.stopping() or self.next_index >= len(self.results):
                return None
            index, self.next_index = self.next_index, self.next_index + 1
            return index

    def finish(self, index: int, outcome: _Outcome) -> None:
        with self.lock:
            self.results[index] = outcome
            self.remaining -= 1
        self.changed.set()

    def fail(self, error: ModelError) -> None:
        """The first error ends the call; later ones (often echoes of the first) are dropped."""
        with self.lock:
            if self.error is None and not self.stopping():
                self.error = error
        self.stop()

    def cancel(self) -> None:
        self.cancelled = True
        self.stop()

    def stop(self) -> None:
        """No request of this call starts from now on, the waiting ones leave the slot queue, and the
        responses being read are hung up: their workers wake and the server sees the client go."""
        with self.lock:  # held while hanging up, so that no worker hands its connection back meanwhile
            self.stopped.set()
            for http in self._reading:
                _hang_up(http)
        self.slots.wake()
        self.changed.set()

    @contextlib.contextmanager
    def reading(self, http: Any) -> Iterator[None]:
        """While the body of `http` is read, stop() may hang it up."""
        with self.lock:
            if self.stopping():
                raise _Cancelled
            self._reading.add(http)
        try:
            yield
        finally:
            with self.lock:
                self._reading.discard(http)


class OpenAIEngine:
    """Completes chat requests on an OpenAI-compatible server, at most `concurrency` requests in flight
    at a time across all the threads that call it."""

    backend = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 120,
        max_retries: int = 3,
        concurrency: int | None = None,
    ):
        self.base_url, url_model = normalize_base_url(base_url)
        self.api_key = api_key or next((os.environ[k] for k in API_KEY_ENVS if os.environ.get(k)), DUMMY_API_KEY)
        self.timeout = float(timeout)
        self.max_retries = max(0, int(max_retries))
        self._slots = _Slots(max(1, int(concurrency or DEFAULT_CONCURRENCY)))
        self._lock = threading.RLock()  # RLock: cancel() may run in a signal handler on this thread
        self._calls: set[_Call] = set()
        self._client = self._new_client()
        self.name: str = model or url_model or self._detect_model()

    @property
    def concurrency(self) -> int:
        """The most requests in flight on this engine at once, all callers together."""
        return self._slots.size

    # ---- the Engine protocol ----------------------------------------------------------------------

    def generate(self, requests: Sequence[ChatRequest], params: Params = None, *,
                 cancel: CancelToken | None = None) -> list[Completion]:
        requests, each = batch_of(requests, params)
        if not requests:
            return []
        call = _Call(len(requests), self._slots)
        with self._lock:
            self._calls.add(call)
        if cancel is not None:
            cancel.on_cancel(call.cancel)  # at once when it already is
        start = time.monotonic()
        try:
            for n in range(min(self.concurrency, len(requests))):
                threading.Thread(
                    target=self._worker, args=(call, requests, each), name=f"routesh-openai-{n}", daemon=True
                ).start()
            while True:
                call.changed.wait()
                call.changed.clear()
                if call.cancelled:
                    raise GenerationCancelled("generation cancelled")
                if call.error is not None:
                    raise call.error
                if call.remaining == 0:
                    break
        finally:
            call.stop()  # after an error, a cancel or Ctrl-C: hang up what still runs (after success: nothing)
            with self._lock:
                self._calls.discard(call)
        seconds = time.monotonic() - start
        completions = []
        for outcome in call.results:
            assert outcome is not None
            completions.append(
                Completion(
                    text=outcome.text,
                    prompt_tokens=outcome.prompt_tokens,
                    output_tokens=outcome.output_tokens,
                    finish_reason=outcome.finish_reason,
                    seconds=seconds,
                    first_token_seconds=None if outcome.first_token_at is None else outcome.first_token_at - start,
                    cached_prompt_tokens=outcome.cached_prompt_tokens,
                    extra=outcome.extra,
                )
            )
        return completions

    def cancel(self) -> None:
        """Make every generate() in flight (any thread) raise GenerationCancelled now; their requests
        are hung up, which tells the server to stop."""
        with self._lock:
            calls = list(self._calls)
        for call in calls:
            call.cancel()

    def close(self) -> None:
        self.cancel()
        with self._lock:
            client = self._client
        client.close()

    def __enter__(self) -> OpenAIEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OpenAIEngine({self.base_url!r}, model={self.name!r})"

    # ---- clients ----------------------------------------------------------------------------------

    def _new_client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.base_url,
            api_key=self.api_key,
            max_retries=0,
            timeout=openai.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
        )

    # ---- the model ----------------------------------------------------------------------------------

    def _detect_model(self) -> str:
        def ask() -> Any:
            try:
                with self._client.models.with_streaming_response.list() as response:
                    return self._read_json(response.http_response, "GET /models")
            except _Failure:
                raise
            except Exception as err:
                raise self._failure(err) from None

        body = self._with_retries(_Call(0, self._slots), ask)
        data = body.get("data") if isinstance(body, dict) else body
        if not isinstance(data, list):
            raise ModelError(str(self._malformed(f"GET /models did not return a list of models: "
                                                 f"{_snippet(json.dumps(body))}")))
        ids = [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str) and m["id"]]
        if not ids:
            raise ModelError(f"the model server at {self.base_url} lists no models (GET /models is empty); "
                             f"name the model in the URL: {self.base_url}#MODEL")
        return ids[0]

    # ---- one request --------------------------------------------------------------------------------

    def _worker(self, call: _Call, requests: list[ChatRequest], params: list[GenerationParams]) -> None:
        while (index := call.take()) is not None:
            if not self._slots.acquire(call.stopping):
                return
            try:  # the slot is held across retries: a busy server (429, 503) gets no more requests meanwhile
                attempt = functools.partial(self._stream_once, call, requests[index], params[index])
                outcome = self._with_retries(call, attempt)
            except _Cancelled:
                return
            except BaseException as err:  # ModelError, or a bug: either way the caller sees it, once
                call.fail(err if isinstance(err, ModelError) else ModelError(
                    f"the request to {self.base_url} failed: {type(err).__name__}: {_one_line(str(err))}"
                ))
                return
            finally:
                self._slots.release()
            call.finish(index, outcome)

    def _with_retries(self, call: _Call, attempt: Callable[[], T]) -> T:
        started = time.monotonic()
        failures: list[_Failure] = []
        for number in range(self.max_retries + 1):
            if call.stopping():
                raise _Cancelled
            try:
                return attempt()
            except _Failure as failure:
                if call.stopping():
                    raise _Cancelled from None
                failures.append(failure)
                if not failure.retryable or number == self.max_retries:
                    break
                delay = min(BACKOFF_CAP, BACKOFF_BASE * 2**number) * (0.5 + random.random() / 2)
                if failure.retry_after is not None:
                    delay = max(delay, min(failure.retry_after, RETRY_AFTER_CAP))
                if time.monotonic() + delay - started > self.timeout:
                    break
                if call.stopped.wait(delay):
                    raise _Cancelled from None
        raise ModelError(self._summary(failures)) from None

    @staticmethod
    def _summary(failures: list[_Failure]) -> str:
        last = failures[-1]
        if len(failures) == 1:
            return last.message
        note = f"gave up after {len(failures)} attempts"
        if failures[0].kind != last.kind:
            note += f"; the first failed with: {failures[0].reason}"
        return f"{last.message} ({note})"

    def _body(self, request: ChatRequest, params: GenerationParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.name,
            "messages": request.as_dicts(),
            "max_tokens": params.max_new_tokens,
            "temperature": 0.0 if params.temperature <= 0 else params.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        stops = [s for s in params.stop if s]
        if stops:
            body["stop"] = stops[:MAX_SERVER_STOPS]
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    def _stream_once(self, call: _Call, request: ChatRequest, params: GenerationParams) -> _Outcome:
        body = self._body(request, params)
        try:
            manager = self._client.chat.completions.with_streaming_response.create(**body)
            with manager as response, call.reading(response.http_response):
                http = response.http_response
                content_type = http.headers.get("content-type", "").lower()
                if "text/event-stream" in content_type:
                    return self._read_stream(call, http, params)
                if "json" in content_type:  # a server that ignored stream=True
                    return self._from_completion(self._read_json(http, "the completion"), params)
                raw = http.read()
                raise self._malformed(
                    f"expected an event stream, got {content_type or 'no content type'}: {_snippet(raw)}"
                )
        except (_Failure, _Cancelled):
            raise
        except Exception as err:
            if call.stopping():
                raise _Cancelled from None
            raise self._failure(err) from None

    def _read_stream(self, call: _Call, http: Any, params: GenerationParams) -> _Outcome:
        stops = [s for s in params.stop if s]
        longest_stop = max((len(s) for s in stops), default=0)
        text = ""
        first_token_at: float | None = None
        finish: str | None = None
        usage: dict[str, Any] | None = None
        saw_event = saw_choice = False
        stopped_here = False  # a stop string showed up in the text: what follows is not wanted
        grace = GRACE_CHUNKS
        for data in _sse_data(http.iter_lines()):
            if call.stopping():
                raise _Cancelled
            if data.strip() == "[DONE]":
                break
            saw_event = True
            try:
                chunk = json.loads(data)
            except ValueError:
                raise self._malformed(f"an event is not JSON: {_snippet(data)}") from None
            if not isinstance(chunk, dict):
                raise self._malformed(f"an event is not a JSON object: {_snippet(data)}")
            if chunk.get("error"):
                raise self._server_error(chunk["error"])
            if isinstance(chunk.get("usage"), dict):
                usage = chunk["usage"]
            choices = chunk.get("choices")
            if choices is not None and not isinstance(choices, list):
                raise self._malformed(f"'choices' is not a list: {_snippet(data)}")
            content = None
            if choices:  # the usage chunk of vLLM and others has an empty list
                choice = choices[0]
                if not isinstance(choice, dict):
                    raise self._malformed(f"a choice is not an object: {_snippet(data)}")
                saw_choice = True
                delta = choice.get("delta", choice.get("message"))
                if delta is not None and not isinstance(delta, dict):
                    raise self._malformed(f"a delta is not an object: {_snippet(data)}")
                content = (delta or {}).get("content") or choice.get("text")
                if choice.get("finish_reason"):
                    finish = str(choice["finish_reason"])
            if stopped_here:
                grace -= 1
                if usage is not None or grace <= 0:
                    break  # the usage chunk came, or the server ignores `stop`: either way, stop reading
                continue
            if isinstance(content, str) and content:
                if first_token_at is None:
                    first_token_at = time.monotonic()
                before = len(text)
                text += content
                if stops:  # a stop string may straddle two chunks: look from just before this one
                    start = max(0, before - longest_stop + 1)
                    tail, found = truncate_at_stop(text[start:], stops)
                    if found:
                        text, stopped_here = text[:start] + tail, True
        if not saw_event:
            raise self._malformed("the event stream carried no data")
        if not saw_choice:
            raise self._malformed("no choices in the response")
        reason: FinishReason = "length" if finish == "length" and not stopped_here else "stop"
        return self._outcome(text, reason, usage, first_token_at, missing_finish=finish is None and not stopped_here)

    def _from_completion(self, body: Any, params: GenerationParams) -> _Outcome:
        if not isinstance(body, dict):
            raise self._malformed(f"expected a JSON object, got {_snippet(json.dumps(body))}")
        if body.get("error"):
            raise self._server_error(body["error"])
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            raise self._malformed("no choices in the response")
        choice = choices[0]
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if content is None and isinstance(choice, dict):
            content = choice.get("text")
        if not isinstance(content, str):
            raise self._malformed("the first choice has no text")
        text, found = truncate_at_stop(content, params.stop)
        finish = choice.get("finish_reason")
        reason: FinishReason = "stop" if found or finish != "length" else "length"
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else None
        return self._outcome(text, reason, usage, None, missing_finish=not finish)

    @staticmethod
    def _outcome(text: str, reason: FinishReason, usage: dict[str, Any] | None, first_token_at: float | None,
                 *, missing_finish: bool) -> _Outcome:
        extra: dict[str, object] = {}
        if missing_finish:
            extra["finish_reason_missing"] = True
        if usage is None:
            extra["usage_missing"] = True
            return _Outcome(text, 0, 0, reason, first_token_at, extra=extra)
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        return _Outcome(
            text,
            _int(usage.get("prompt_tokens")),
            _int(usage.get("completion_tokens")),
            reason,
            first_token_at,
            cached_prompt_tokens=_int(cached),
            extra=extra,
        )

    # ---- errors, each one line ----------------------------------------------------------------------

    def _read_json(self, http: Any, what: str) -> Any:
        try:
            raw = http.read()
        except Exception as err:
            raise self._failure(err) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise self._malformed(f"{what} is not JSON: {_snippet(raw)}") from None

    def _malformed(self, detail: str) -> _Failure:
        return _Failure(
            "malformed",
            f"the model server at {self.base_url} returned a malformed response: {_one_line(detail)}",
            "a malformed response",
            retryable=False,
        )

    def _server_error(self, error: Any) -> _Failure:
        message = _error_message(error) or "an unspecified error"
        return _Failure(
            "server", f"the model server at {self.base_url} reported an error: {message}", message, retryable=False
        )

    def _failure(self, err: BaseException) -> _Failure:
        url = self.base_url
        if isinstance(err, openai.APIStatusError):
            status = err.status_code
            try:
                text = err.response.text
            except Exception:
                text = ""
            detail = _status_detail(text) or err.response.reason_phrase or "no details"
            retry_after = _retry_after(err.response.headers.get("retry-after"))
            return _Failure(
                "http",
                f"the model server at {url} answered HTTP {status}: {detail}",
                f"HTTP {status}",
                retryable=status == 429 or status >= 500,
                retry_after=retry_after,
            )
        cause = _root_cause(err)
        if isinstance(err, openai.APITimeoutError) or isinstance(cause, (_http.TimeoutException, TimeoutError)):
            return _Failure("timeout", f"the model server at {url} did not answer within {self.timeout:g} s",
                            "a timeout", retryable=True)
        if isinstance(cause, ConnectionRefusedError) or isinstance(err, openai.APIConnectionError) and isinstance(
            cause, _http.ConnectError
        ):
            reason = "connection refused" if isinstance(cause, ConnectionRefusedError) else _describe(cause)
            return _Failure("connect", f"cannot reach the model server at {url}: {reason}", reason, retryable=True)
        if isinstance(cause, (_http.TransportError, ConnectionError, OSError)) or isinstance(
            err, openai.APIConnectionError
        ):
            reason = _describe(cause)
            return _Failure(
                "dropped",
                f"the model server at {url} closed the connection in the middle of a response ({reason})",
                "the connection closed in the middle of a response",
                retryable=True,
            )
        return _Failure(
            "http", f"the request to the model server at {url} failed: {_describe(err)}", _describe(err),
            retryable=False,
        )


# ---- helpers ------------------------------------------------------------------------------------------


def _hang_up(http: Any) -> None:
    """Shut down the socket under a response being read: the thread blocked reading it wakes at once,
    and the server sees the client go (even while it is silent, say prefilling a long prompt)."""
    if not str(http.http_version).startswith("HTTP/1"):
        return  # an HTTP/2 connection carries other requests too (our client speaks HTTP/1.1)
    stream = http.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is None:
        return
    try:  # socket.socket's own shutdown, also under TLS: SSLSocket's would drop its state under the reader
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:  # already closed: nothing to hang up
        pass


def _sse_data(lines: Iterator[str]) -> Iterator[str]:
    """The data of each server-sent event (several `data:` lines of one event joined by newlines)."""
    buffer: list[str] = []
    for line in lines:
        if not line.strip():
            if buffer:
                yield "\n".join(buffer)
                buffer = []
            continue
        if line.startswith("data:"):
            value = line[5:]
            buffer.append(value[1:] if value.startswith(" ") else value)
        # event:, id:, retry: and comments (": ping") carry nothing we use
    if buffer:
        yield "\n".join(buffer)


def _error_message(error: Any) -> str:
    if isinstance(error, dict):
        for key in ("message", "detail", "error", "msg"):
            if error.get(key):
                return _error_message(error[key])
        return _one_line(json.dumps(error))[:300]
    if isinstance(error, list):
        return "; ".join(filter(None, (_error_message(e) for e in error)))[:300]
    return _one_line(str(error))[:300]


def _status_detail(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    try:
        body = json.loads(text)
    except ValueError:
        return _snippet(text)
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            if body.get(key):
                return _error_message(body[key])
    return _snippet(text)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: use our own backoff


def _root_cause(err: BaseException) -> BaseException:
    """The innermost exception of the cause chain that says something (a timeout, a refused connection)."""
    chain = [err]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and nxt not in chain and len(chain) < 12:
        chain.append(nxt)
    for item in chain:
        if isinstance(item, (ConnectionRefusedError, TimeoutError)):
            return item
    for item in chain:
        if isinstance(item, _http.HTTPError) or isinstance(item, OSError):
            return item
    return chain[-1]


def _describe(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    text = _one_line(str(err)) or type(err).__name__
    return text[:200]


def _snippet(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = _one_line(text)
    if not text:
        return "(empty)"
    return repr(text[:_SNIPPET] + ("…" if len(text) > _SNIPPET else ""))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _int(value: Any) -> int:
    try:
        return int(value) if value is not None else 0
    except (TypeError, ValueError):
        return 0
