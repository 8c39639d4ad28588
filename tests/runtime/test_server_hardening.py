"""The HTTP server's limits, error mapping and authentication, against hostile or careless input.

A real uvicorn server over the tiny random-weight model with the default
tokenizer (context 512 tokens); stub clients through ``httpx.ASGITransport``
where no model is needed.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from types import SimpleNamespace
from urllib.parse import urlparse

import httpx
import openai
import pytest

from tether.engine import Engine, EngineConfig, RequestMetrics, RequestOutput
from tether.engine.model_loader import load_tokenizer
from tether.runtime.bench_serve import running_server
from tether.runtime.client import LLMClient, LocalClient
from tether.runtime.openai_protocol import OpenAIError, PromptRenderer, max_chars_per_token
from tether.runtime.server import DEFAULT_MAX_BODY_BYTES, create_app
from tiny_model import tiny_llama

ASK = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("default")


def _tiny_engine(tok) -> Engine:
    return Engine(EngineConfig(num_kv_blocks=256, max_num_batched_tokens=256), hf_model=tiny_llama(vocab_size=len(tok)),
                  tokenizer=tok)


@pytest.fixture(scope="module")
def server(tok):
    engine = _tiny_engine(tok)
    with running_server(create_app(LocalClient(engine, "tiny"), max_body_bytes=1 << 20)) as base:
        yield SimpleNamespace(base=base, engine=engine)


def assert_openai_error(resp, status: int, param: str | None = None, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err


def _raw_post(base: str, path: str, body: bytes) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """POST on a fresh keep-alive connection (``http.client``), so a test can tell whether it is kept."""
    url = urlparse(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    return conn, conn.getresponse()


def _assert_kept_alive(conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
    """The error came back on a connection the server keeps: the next request goes on the same socket."""
    sock = conn.sock
    assert sock is not None and resp.getheader("connection", "").lower() != "close"
    conn.request("GET", "/health")
    again = conn.getresponse()
    assert again.status == 200 and json.loads(again.read())["status"] == "ok" and conn.sock is sock
    conn.close()


# ---- body size -------------------------------------------------------------------------

def test_a_body_over_the_limit_is_refused_with_413(server):
    big = json.dumps({"messages": [{"role": "user", "content": "x" * (2 << 20)}]}).encode()
    err = assert_openai_error(httpx.post(f"{server.base}/v1/chat/completions", content=big), 413,
                              code="request_too_large")
    assert "limit of 1048576 bytes" in err["message"]

    def chunks():  # no Content-Length: counted as it arrives
        for i in range(0, len(big), 64 << 10):
            yield big[i:i + (64 << 10)]
    assert_openai_error(httpx.post(f"{server.base}/v1/completions", content=chunks()), 413)
    assert httpx.get(f"{server.base}/health").status_code == 200


async def test_the_default_limit_refuses_a_10_mb_message_unread():
    """The tester's 10 MB message: refused from its Content-Length, before the client is ever reached."""
    client = _StubClient()
    body = json.dumps({"messages": [{"role": "user", "content": "x" * 10_000_000}]}).encode()
    assert len(body) > DEFAULT_MAX_BODY_BYTES
    async with _asgi(create_app(client)) as http_:
        resp = await http_.post("/v1/chat/completions", content=body)
    assert_openai_error(resp, 413) and client.requests == []


# ---- the event loop stays free -----------------------------------------------------------

def test_health_answers_fast_while_a_big_prompt_is_tokenized(tok):
    """Parsing, the chat template and the tokenizer run off the event loop: /health and a small chat
    request are served while a ~1 MB prompt is tokenized (seconds on this machine)."""
    engine = _tiny_engine(tok)
    # A long context, so the character-count check lets the big prompt through to the tokenizer.
    app = create_app(LocalClient(engine, "tiny"), context_tokens=10_000_000)
    words = " ".join(f"word{i % 997} and, more; text." for i in range(40_000))  # ~1 MB, ~ 300k tokens
    with running_server(app) as base, httpx.Client(base_url=base, timeout=120) as http_:
        http_.post("/v1/chat/completions", json={"messages": ASK, "max_tokens": 2})  # warm up
        big: dict = {}

        def send_big():
            t0 = time.perf_counter()
            big["resp"] = httpx.post(f"{base}/v1/chat/completions", timeout=120,
                                     json={"messages": [{"role": "user", "content": words}], "max_tokens": 2})
            big["took"] = time.perf_counter() - t0
        thread = threading.Thread(target=send_big)
        thread.start()
        time.sleep(0.1)  # the big request is in: parsing, rendering, tokenizing
        health, small = [], None
        while thread.is_alive():
            t0 = time.perf_counter()
            assert http_.get("/health").status_code == 200
            health.append(time.perf_counter() - t0)
            if small is None:
                t0 = time.perf_counter()
                assert http_.post("/v1/chat/completions", json={"messages": ASK, "max_tokens": 2}).status_code == 200
                small = time.perf_counter() - t0
            time.sleep(0.02)
        thread.join()
    # The engine refuses the prompt (longer than the model's 512 tokens) once it is tokenized.
    assert_openai_error(big["resp"], 400)
    assert big["took"] > 0.5 and len(health) >= 5, (big["took"], len(health))  # /health was asked meanwhile
    health.sort()  # < 100 ms (a few ms here), allowing a stray slow answer on a busy machine
    assert health[int(len(health) * 0.95) - 1] < 0.1 and health[-1] < 0.25, health
    assert small is not None and small < big["took"] / 2, (small, big["took"])


def test_a_prompt_too_long_by_its_characters_is_refused_before_tokenizing(server, tok):
    k = max_chars_per_token(tok)
    assert 16 <= k <= 400  # the default vocabulary's longest entry, doubled
    content = "ab " * (512 * k // 3 + 10)  # more characters than 512 tokens can hold
    t0 = time.perf_counter()
    resp = httpx.post(f"{server.base}/v1/chat/completions", json={"messages": [{"role": "user", "content": content}]})
    err = assert_openai_error(resp, 400, "messages", "context_length_exceeded")
    assert "context of 512 tokens" in err["message"] and time.perf_counter() - t0 < 5
    resp = httpx.post(f"{server.base}/v1/completions", json={"prompt": content})
    assert_openai_error(resp, 400, "prompt", "context_length_exceeded")

    class NoTokenizing:  # the check runs first: a tokenizer that must not be called
        def get_vocab(self):
            return tok.get_vocab()

        def encode(self, *a, **kw):
            raise AssertionError("tokenized a prompt that cannot fit")
    with pytest.raises(OpenAIError) as info:
        PromptRenderer(NoTokenizing(), context_tokens=512).encode("x" * 10**6, 16, "prompt", True)
    assert info.value.param == "prompt" and info.value.code == "context_length_exceeded"
    # A prompt that may fit is not refused by the check: the engine counts its tokens.
    assert PromptRenderer(tok, context_tokens=512).encode("ab " * 100, 16, "prompt", False)


# ---- decode and encode errors are 400s ----------------------------------------------------

def test_a_lone_surrogate_is_a_400_naming_the_field(server):
    chat = json.dumps({"messages": [ASK[0], {"role": "user", "content": "bad \ud800 text"}], "max_tokens": 2})
    assert "\\ud800" in chat  # JSON's escape: valid UTF-8 on the wire, no Unicode text once parsed
    conn, resp = _raw_post(server.base, "/v1/chat/completions", chat.encode())
    err = json.loads(resp.read())["error"]
    assert resp.status == 400 and err["param"] == "messages" and err["code"] == "invalid_unicode", err
    assert "messages[1].content" in err["message"]
    _assert_kept_alive(conn, resp)
    comp = json.dumps({"prompt": "bad \udfff", "max_tokens": 2}).encode()
    assert_openai_error(httpx.post(f"{server.base}/v1/completions", content=comp), 400, "prompt", "invalid_unicode")
    # Where no text is tokenized, a surrogate does no harm, and no error quoting it fails to encode.
    ok = json.dumps({"messages": ASK, "max_tokens": 2, "user": "\ud800", "stop": ["\udc00"]}).encode()
    assert httpx.post(f"{server.base}/v1/chat/completions", content=ok).status_code == 200
    bad_role = json.dumps({"messages": [{"role": "\ud800", "content": "x"}]}).encode()
    assert_openai_error(httpx.post(f"{server.base}/v1/chat/completions", content=bad_role), 400)


@pytest.mark.parametrize("body", [
    b"[" * 5000 + b"]" * 5000,
    b'{"messages": ' + b"[" * 6000 + b"]" * 6000 + b"}",
    b'{"messages": [{"role": "user", "content": [' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"]}]}",
    b'{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f", '
    b'"parameters": ' + b'{"a": ' * 900 + b"1" + b"}" * 900 + b"}}]}",
], ids=["array-5000", "messages-6000", "content-5000", "tool-parameters-900"])
def test_deeply_nested_json_is_a_400_and_the_connection_is_kept(server, body):
    conn, resp = _raw_post(server.base, "/v1/chat/completions", body)
    payload = json.loads(resp.read())
    assert resp.status == 400, payload
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    _assert_kept_alive(conn, resp)


# ---- authentication -------------------------------------------------------------------------

class _StubClient(LLMClient):
    """Replies "Hi" at once; remembers the requests it got; reports ``stats``."""

    model_name, tokenizer, policy = "stub", None, "tether"

    def __init__(self, stats: dict | None = None):
        self.requests, self._stats = [], stats or {}

    async def generate(self, request):
        self.requests.append(request)
        yield RequestOutput(request.request_id, [5], "Hi", finished=True, finish_reason="stop",
                            metrics=RequestMetrics(0.0, prompt_tokens=3, output_tokens=1))

    async def abort(self, request_id): ...
    async def stats(self): return self._stats
    async def tool_hint(self, program_id, tool_keys): ...
    async def end_program(self, program_id): ...


def _asgi(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_every_v1_route_needs_the_api_key():
    client = _StubClient()
    app = create_app(client, api_key="s3cret")
    good, wrong = {"Authorization": "Bearer s3cret"}, {"Authorization": "Bearer nope"}
    calls = [("GET", "/v1/models", None), ("GET", "/v1/models/stub", None),
             ("POST", "/v1/chat/completions", {"messages": ASK}), ("POST", "/v1/completions", {"prompt": [1, 2]})]
    async with _asgi(app) as http_:
        for method, path, body in calls:
            for headers in ({}, wrong, {"Authorization": "s3cret"}, {"Authorization": "Basic czNjcmV0"}):
                resp = await http_.request(method, path, json=body, headers=headers)
                assert_openai_error(resp, 401, code="invalid_api_key")
                assert resp.headers["www-authenticate"].startswith("Bearer")
            assert (await http_.request(method, path, json=body, headers=good)).status_code == 200, path
        assert len(client.requests) == 2  # only the authorized generations reached the client
        assert_openai_error(await http_.post("/v1/nope", json={}), 401)  # unknown routes too: nothing leaks
        assert (await http_.get("/health")).json()["status"] == "ok"  # open, for liveness probes
        assert (await http_.get("/metrics")).status_code == 200  # open unless metrics_need_key
        schema = (await http_.get("/openapi.json")).json()
        assert schema["paths"]["/v1/chat/completions"]["post"]["security"] == [{"bearer": []}]


async def test_metrics_need_the_key_when_asked():
    async with _asgi(create_app(_StubClient(), api_key="k", metrics_need_key=True)) as http_:
        assert_openai_error(await http_.get("/metrics"), 401)
        assert (await http_.get("/metrics", headers={"Authorization": "Bearer k"})).status_code == 200
        assert (await http_.get("/health")).status_code == 200


def test_the_openai_client_with_the_right_or_wrong_key(tok):
    engine = _tiny_engine(tok)
    with running_server(create_app(LocalClient(engine, "tiny"), api_key="s3cret")) as base:
        wrong = openai.OpenAI(base_url=f"{base}/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="tiny", messages=ASK, max_tokens=2)
        right = openai.OpenAI(base_url=f"{base}/v1", api_key="s3cret", max_retries=0)
        assert right.chat.completions.create(model="tiny", messages=ASK, max_tokens=2).choices[0].message.role


def test_tether_serve_takes_the_key_from_the_flag_or_the_environment(monkeypatch):
    import tether.engine
    import tether.runtime.server
    from tether.cli import main

    seen = []

    class FakeEngine:
        def __init__(self, config):
            self.config, self.tokenizer = config, None

    monkeypatch.setattr(tether.engine, "Engine", FakeEngine)
    monkeypatch.setattr(tether.runtime.server, "serve", lambda client, host, port, **kw: seen.append(kw))
    monkeypatch.delenv("TETHER_API_KEY", raising=False)
    main(["serve"])
    main(["serve", "--api-key", "flag", "--metrics-need-key", "--max-body-mb", "2"])
    monkeypatch.setenv("TETHER_API_KEY", "env")
    main(["serve", "--max-body-mb", "0"])
    keys = ("api_key", "metrics_need_key", "max_body_bytes")
    seen = [{k: kw[k] for k in keys} for kw in seen]  # serve also gets the trace UI's folder
    assert seen == [{"api_key": None, "metrics_need_key": False, "max_body_bytes": 8 << 20},
                    {"api_key": "flag", "metrics_need_key": True, "max_body_bytes": 2 << 20},
                    {"api_key": "env", "metrics_need_key": False, "max_body_bytes": None}]


# ---- /metrics exports every numeric stat ----------------------------------------------------

async def test_metrics_export_every_numeric_stat():
    stats = {"running": 1, "programs": 3, "replica_restarts": 2, "kv_blocks_used": 7, "some.new-stat": 1.5,
             "ttft_mean": None, "replicas": [{"running": 1}], "flag": True}
    async with _asgi(create_app(_StubClient(stats))) as http_:
        text = (await http_.get("/metrics")).text
    for line in ("tether_programs 3.0", "tether_replica_restarts 2.0", "tether_kv_blocks_used 7.0",
                 "tether_requests_running 1.0", "tether_engine_some_new_stat 1.5"):
        assert line in text.splitlines(), line
    assert "tether_engine_flag" not in text and "tether_engine_replicas" not in text and "ttft_mean" not in text
