"""The OpenAI-compatible server, driven by the official ``openai`` client against a real uvicorn server.

One module-scoped server runs the real default model (SmolLM2-135M-Instruct,
the session's ``default_model``). The engine is created here but only the
server's event loop drives it; its client can force a program's reply
(``forced_output_ids``), e.g. to a tool call the 135M model would not write.
Stub clients cover engine failures and call order through ``httpx.ASGITransport``.
"""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace

import httpx
import openai
import pytest

from tether.engine import Engine, EngineConfig, EngineError, RequestMetrics, RequestOutput, SamplingParams
from tether.runtime.bench_serve import running_server
from tether.runtime.client import LLMClient, LocalClient
from tether.runtime.openai_protocol import TokenText
from tether.runtime.server import create_app

MODEL = "smollm2"
ASK = [{"role": "user", "content": "Name three colors of the rainbow."}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


SHELL = {"type": "function", "function": {
    "name": "shell", "description": "Run a shell command",
    "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}}


class _ForcingClient(LocalClient):
    """The in-process client, emitting ``forced[program_id]`` (token ids) for that program's requests."""

    def __init__(self, engine: Engine, model_name: str):
        super().__init__(engine, model_name)
        self.forced: dict[str, list[int]] = {}

    def generate(self, request):
        ids = self.forced.get(request.program_id)
        if ids is not None:
            sampling = SamplingParams(**{**request.sampling.model_dump(), "forced_output_ids": ids})
            request = request.model_copy(update={"sampling": sampling})
        return super().generate(request)


@pytest.fixture(scope="module")
def server(default_model):
    engine = Engine(EngineConfig(num_kv_blocks=256, max_num_batched_tokens=256), hf_model=default_model.hf_model,
                    tokenizer=default_model.tokenizer)
    events: list = []
    engine.add_listener(events.append)  # called from the step thread; list.append is atomic
    client = _ForcingClient(engine, MODEL)
    with running_server(create_app(client, model_name=MODEL)) as base:
        yield SimpleNamespace(base=base, engine=engine, events=events, client=client,
                              oai=openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0, timeout=60))


def chat(server, **kw):
    kw.setdefault("messages", ASK)
    kw.setdefault("max_tokens", 16)
    kw.setdefault("temperature", 0)
    return server.oai.chat.completions.create(model=MODEL, **kw)


def assert_openai_error(resp: httpx.Response, status: int = 400, param: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["type"] == ("invalid_request_error" if status < 500 else "server_error")
    if param is not None:
        assert err["param"] == param
    return err


# ---- basics -------------------------------------------------------------------------

def test_health_and_models_report_the_policy(server):
    assert server.engine.config.policy == "tether"  # the default preset
    assert httpx.get(f"{server.base}/health").json() == {"status": "ok", "policy": "tether"}
    models = server.oai.models.list().data
    assert [m.id for m in models] == [MODEL] and models[0].policy == "tether"
    card = server.oai.models.retrieve(MODEL)
    assert card.owned_by == "tether" and card.policy == "tether"


def test_plain_chat_completion(server):
    r = chat(server)
    choice = r.choices[0]
    assert r.object == "chat.completion" and r.model == MODEL and r.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length") and choice.message.tool_calls is None
    u = r.usage
    assert u.prompt_tokens > 10 and 0 < u.completion_tokens <= 16
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_repeated_long_prompt_reports_cached_tokens(server):
    system = "You are a careful assistant. " + " ".join(f"Rule {i}: answer briefly and politely." for i in range(12))
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": "Say hi."}]
    chat(server, messages=msgs, max_tokens=4)
    u = chat(server, messages=msgs, max_tokens=4).usage
    assert u.prompt_tokens > 64
    assert u.prompt_tokens_details.cached_tokens >= 64 and u.prompt_tokens_details.cached_tokens % 16 == 0


def test_shared_text_behind_another_prompt_reports_reused_tokens(server):
    """The same document behind two different system prompts: the second request places the
    first one's KV for it (usage ``reused_tokens``, ``/metrics``); ``kv_reuse: false`` opts out."""
    doc = "Release notes. " + " ".join(f"Item {i}: the parser now keeps field {i} when it is empty." for i in range(9))
    ask = lambda who, **kw: chat(server, max_tokens=4, messages=[  # noqa: E731
        {"role": "system", "content": f"You are the {who}. Answer in one word."},
        {"role": "user", "content": doc}], **kw).usage
    ask("reader")
    u = ask("second reviewer on call today")
    assert u.prompt_tokens_details.reused_tokens >= 64  # the document, placed at a new offset
    assert ask("third reviewer", extra_body={"kv_reuse": False}).prompt_tokens_details.reused_tokens == 0
    metrics = httpx.get(f"{server.base}/metrics").text
    assert "tether_reused_prompt_tokens_total" in metrics and "tether_reuse_rate" in metrics
    server.engine.core.check_no_leaks()


def test_stream_equals_plain_greedy_text(server):
    plain = chat(server, max_tokens=24)
    chunks = list(chat(server, max_tokens=24, stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    assert "".join(d.content or "" for d in deltas) == plain.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_stop_strings_cut_plain_and_streamed_text(server):
    text = chat(server, max_tokens=24).choices[0].message.content
    stop = text[len(text) // 2:len(text) // 2 + 3]
    assert stop.strip(), text
    expect = text[:text.index(stop)]
    r = chat(server, max_tokens=24, stop=[stop, "\u2603never"])
    assert r.choices[0].message.content == expect and r.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in chat(server, max_tokens=24, stop=stop, stream=True))
    assert streamed == expect


def test_logprobs_have_openai_shape(server):
    r = chat(server, max_tokens=8, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert 0 < len(content) <= 8
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        tops = [t.logprob for t in entry.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        assert entry.top_logprobs[0].token == entry.token  # greedy picks the most likely token
        assert bytes(entry.bytes).decode("utf-8", errors="replace") == entry.token
    assert b"".join(bytes(e.bytes) for e in content).decode() == r.choices[0].message.content
    assert chat(server, max_tokens=2).choices[0].logprobs is None


def test_completions_plain_streamed_and_token_ids(server):
    kw = dict(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    plain = server.oai.completions.create(**kw)
    assert plain.object == "text_completion" and plain.choices[0].text
    assert plain.choices[0].finish_reason in ("stop", "length") and plain.usage.completion_tokens <= 8
    streamed = "".join(c.choices[0].text for c in server.oai.completions.create(stream=True, **kw) if c.choices)
    assert streamed == plain.choices[0].text
    ids = server.engine.tokenizer.encode("The capital of France is")
    by_ids = server.oai.completions.create(**{**kw, "prompt": ids, "logprobs": 2})
    assert by_ids.choices[0].text == plain.choices[0].text
    lp = by_ids.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert all(len(t) == 2 for t in lp.top_logprobs) and "".join(lp.tokens) == by_ids.choices[0].text


def test_metrics_exposes_request_token_and_engine_series(server):
    chat(server, max_tokens=2)
    text = httpx.get(f"{server.base}/metrics").text
    for name in ("tether_http_requests_total", "tether_prompt_tokens_total", "tether_completion_tokens_total",
                 "tether_cached_prompt_tokens_total", "tether_time_to_first_token_seconds_bucket",
                 "tether_requests_running", "tether_requests_waiting", "tether_kv_blocks_used",
                 "tether_kv_blocks_total", "tether_prefix_hit_tokens"):
        assert name in text, name
    assert 'tether_http_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert "tether_kv_blocks_total 256.0" in text


# ---- tools --------------------------------------------------------------------------

def _assert_reply_well_formed(choice) -> None:
    calls = choice.message.tool_calls or []
    if calls:
        assert choice.finish_reason == "tool_calls"
        for tc in calls:
            assert tc.id and tc.type == "function" and tc.function.name == "get_weather"
            assert isinstance(json.loads(tc.function.arguments), dict)
    else:
        assert choice.finish_reason in ("stop", "length") and isinstance(choice.message.content, str)


def test_request_with_tools_returns_content_or_tool_calls(server):
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    _assert_reply_well_formed(chat(server, messages=msgs, tools=[WEATHER], max_tokens=32).choices[0])
    forced = chat(server, messages=msgs, tools=[WEATHER], max_tokens=32,
                  tool_choice={"type": "function", "function": {"name": "get_weather"}})
    _assert_reply_well_formed(forced.choices[0])


def test_tool_conversation_round_trip_and_streamed_tools(server):
    msgs = [{"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees and sunny"}]
    _assert_reply_well_formed(chat(server, messages=msgs, tools=[WEATHER]).choices[0])
    chunks = list(chat(server, messages=msgs[:1], tools=[WEATHER], max_tokens=32, stream=True))
    finish = chunks[-1].choices[0].finish_reason
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert (finish == "tool_calls") == bool(calls)


# ---- program extensions -------------------------------------------------------------

def _hints(server, program_id: str) -> list[list[str]]:
    return [e.data["tools"] for e in list(server.events) if e.kind == "tool_call" and e.program_id == program_id]


def test_program_fields_reach_the_engine(server):
    before = server.engine.stats()
    chat(server, max_tokens=2, extra_body={"program_id": "prog-1", "turn": 1, "tool_hint": ["search"]})
    assert _hints(server, "prog-1") == [["search"]]  # sent when the reply finished, before the response
    chat(server, max_tokens=2, extra_body={"program_id": "prog-1", "turn": 2,
                                            "tool_hint": {"name": "bash", "arguments": '{"command": "make -j4"}'}})
    assert _hints(server, "prog-1") == [["search"], ["make"]]
    chat(server, max_tokens=2, extra_body={"program_id": "prog-1", "is_last_turn": True, "tool_hint": "grep"})
    assert _hints(server, "prog-1") == [["search"], ["make"]]  # the last turn: no next turn to keep the KV for
    after = server.engine.stats()
    assert after["tool_hints"] - before["tool_hints"] == 2
    assert after["programs_ended"] - before["programs_ended"] == 1


def _force(server, program_id: str, text: str) -> None:
    server.client.forced[program_id] = server.engine.tokenizer.encode(text, add_special_tokens=False)


PYTEST_CALL = '<tool_call>{"name": "shell", "arguments": {"command": "cd /tmp && pytest -q"}}</tool_call>'


def test_a_replys_tool_call_is_hinted_when_the_reply_finishes(server):
    """No ``tool_hint`` from the client: the server keys the parsed shell call by its program."""
    _force(server, "prog-shell", PYTEST_CALL)
    msgs = [{"role": "user", "content": "Run the tests."}]
    r = chat(server, messages=msgs, tools=[SHELL], extra_body={"program_id": "prog-shell", "turn": 0})
    assert r.choices[0].finish_reason == "tool_calls"
    assert json.loads(r.choices[0].message.tool_calls[0].function.arguments) == {"command": "cd /tmp && pytest -q"}
    assert _hints(server, "prog-shell") == [["pytest"]]  # already there when the response arrived

    _force(server, "prog-shell-stream", PYTEST_CALL)
    seen_at_calls = None
    for chunk in chat(server, messages=msgs, tools=[SHELL], stream=True,
                      extra_body={"program_id": "prog-shell-stream"}):
        if chunk.choices and chunk.choices[0].delta.tool_calls:
            seen_at_calls = _hints(server, "prog-shell-stream")  # the engine heard before the client saw the calls
    assert seen_at_calls == [["pytest"]]
    assert _hints(server, "prog-shell-stream") == [["pytest"]]

    # a turn without tool calls hints nothing, and an explicit [] suppresses the hint
    for pid in ("prog-shell", "prog-shell-stream"):
        server.client.forced.pop(pid)
        chat(server, max_tokens=1, extra_body={"program_id": pid})
        assert _hints(server, pid) == [["pytest"]]
    _force(server, "prog-quiet", PYTEST_CALL)
    r = chat(server, messages=msgs, tools=[SHELL], extra_body={"program_id": "prog-quiet", "tool_hint": []})
    assert r.choices[0].finish_reason == "tool_calls" and _hints(server, "prog-quiet") == []
    server.client.forced.pop("prog-quiet")
    for pid in ("prog-shell", "prog-shell-stream", "prog-quiet"):  # end the programs (and their pins)
        chat(server, max_tokens=1, extra_body={"program_id": pid, "is_last_turn": True})


def test_client_disconnect_aborts_the_stream(server):
    before = sum(1 for e in server.events if e.kind == "finished" and e.data.get("reason") == "abort")
    body = {"model": MODEL, "messages": ASK, "max_tokens": 400, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{server.base}/v1/chat/completions", json=body, timeout=30) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        assert next(lines).startswith("data: ")  # generation has started; now hang up
    deadline = time.monotonic() + 10
    while sum(1 for e in server.events if e.kind == "finished" and e.data.get("reason") == "abort") == before:
        assert time.monotonic() < deadline, "the engine request was not aborted"
        time.sleep(0.05)
    assert server.engine.stats()["running"] == 0


def test_client_disconnect_aborts_a_plain_request(server):
    before = sum(1 for e in server.events if e.kind == "finished" and e.data.get("reason") == "abort")
    body = {"model": MODEL, "messages": ASK, "max_tokens": 400, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and hangs up mid-generation
        httpx.post(f"{server.base}/v1/chat/completions", json=body, timeout=httpx.Timeout(30, read=1.5))
    deadline = time.monotonic() + 10
    while sum(1 for e in server.events if e.kind == "finished" and e.data.get("reason") == "abort") == before:
        assert time.monotonic() < deadline, "the engine request was not aborted"
        time.sleep(0.05)
    assert server.engine.stats()["running"] == 0
    assert chat(server).choices[0].message.content  # and the server keeps serving


# ---- malformed requests -------------------------------------------------------------

def test_bad_json_and_bad_fields_get_openai_errors(server):
    url = f"{server.base}/v1/chat/completions"
    assert_openai_error(httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}))
    assert_openai_error(httpx.post(url, json=[1, 2]))
    assert_openai_error(httpx.post(url, json={"model": MODEL}), param="messages")
    assert_openai_error(httpx.post(url, json={"messages": "hi"}), param="messages")
    assert_openai_error(httpx.post(url, json={"messages": []}), param="messages")
    assert_openai_error(httpx.post(url, json={"messages": [{"role": "robot", "content": "x"}]}),
                        param="messages.0.role")
    assert_openai_error(httpx.post(url, json={"messages": ASK, "max_tokens": "many"}), param="max_tokens")
    assert_openai_error(httpx.post(url, json={"messages": ASK, "tool_hint": "x"}), param="tool_hint")
    bad_args = {"name": "bash", "arguments": "{not json"}
    assert_openai_error(httpx.post(url, json={"messages": ASK, "program_id": "p", "tool_hint": [bad_args]}),
                        param="tool_hint")
    assert_openai_error(httpx.post(f"{server.base}/v1/completions", json={"prompt": []}), param="prompt")
    assert_openai_error(httpx.post(f"{server.base}/v1/nope", json={}), status=404)


@pytest.mark.parametrize("kw, param", [
    ({"temperature": -1}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"n": 2}, "n"),
    ({"max_tokens": 100_000}, None),  # RequestRejected: exceeds the context
    ({"logprobs": True, "top_logprobs": 50}, "top_logprobs"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
])
def test_invalid_values_raise_bad_request(server, kw, param):
    with pytest.raises(openai.BadRequestError) as info:
        chat(server, **{"max_tokens": 4, **kw})
    err = info.value.response.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    if param is not None:
        assert err["param"] == param


def test_unknown_openai_fields_are_ignored(server):
    r = chat(server, max_tokens=2, presence_penalty=0, user="u-1", parallel_tool_calls=True, store=False)
    assert r.choices[0].finish_reason in ("stop", "length")


# ---- engine failures (no model needed) -----------------------------------------------

class _FailingClient(LLMClient):
    """Fails at once, or after one token when ``after_first``."""

    model_name, tokenizer = "broken", None

    def __init__(self, after_first: bool = False):
        self.after_first = after_first

    async def generate(self, request):
        if self.after_first:
            yield RequestOutput(request.request_id, [5], "Hi")
        raise EngineError("engine step failed: out of memory")

    async def abort(self, request_id): ...
    async def stats(self): return {}
    async def tool_hint(self, program_id, tool_names): ...
    async def end_program(self, program_id): ...


async def test_engine_failure_is_a_500_in_openai_shape():
    transport = httpx.ASGITransport(app=create_app(_FailingClient()))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        for stream in (False, True):
            resp = await http.post("/v1/chat/completions", json={"messages": ASK, "stream": stream})
            assert "out of memory" in assert_openai_error(resp, status=500)["message"]


async def test_failure_after_streaming_began_is_reported_in_band():
    transport = httpx.ASGITransport(app=create_app(_FailingClient(after_first=True)))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        resp = await http.post("/v1/chat/completions", json={"messages": ASK, "stream": True})
    events = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: {")]
    assert resp.status_code == 200 and events[1]["choices"][0]["delta"] == {"content": "Hi"}
    assert events[-1]["error"]["type"] == "server_error" and "[DONE]" not in resp.text


# ---- tool calls and disconnects (stub client: the 135M model never writes a tool call) ----

TOOL_CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


class _StubClient(LLMClient):
    """Replies ``text`` in one output; with ``hang`` the request then stays open until closed."""

    model_name, tokenizer = "stub", None

    def __init__(self, text: str, hang: bool = False):
        self.text, self.hang, self.ended, self.log = text, hang, [], []

    async def generate(self, request):
        yield RequestOutput(request.request_id, [5], self.text, finished=not self.hang,
                            finish_reason=None if self.hang else "stop",
                            metrics=RequestMetrics(0.0, prompt_tokens=3, output_tokens=1))
        await asyncio.Event().wait()  # reached only with ``hang``

    async def abort(self, request_id): ...
    async def stats(self): return {}

    async def tool_hint(self, program_id, tool_names):
        await asyncio.sleep(0.01)
        self.log.append(("hint", program_id, list(tool_names)))

    async def end_program(self, program_id):
        await asyncio.sleep(0.01)  # a round trip, as to an engine replica
        self.ended.append(program_id)
        self.log.append(("end", program_id))


def _assert_weather_call(calls: list[dict]) -> None:
    assert len(calls) == 1 and calls[0]["type"] == "function" and calls[0]["id"].startswith("call_")
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}


async def test_tool_calls_plain_and_streamed():
    transport = httpx.ASGITransport(app=create_app(_StubClient(TOOL_CALL)))
    body = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER]}
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        plain = (await http.post("/v1/chat/completions", json=body)).json()["choices"][0]
        streamed = await http.post("/v1/chat/completions", json={**body, "stream": True})
    assert plain["finish_reason"] == "tool_calls" and plain["message"]["content"] is None
    _assert_weather_call(plain["message"]["tool_calls"])
    chunks = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert "".join(d.get("content") or "" for d in deltas) == ""  # the <tool_call> block is not streamed as text
    _assert_weather_call([tc for d in deltas for tc in d.get("tool_calls", [])])
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls" and streamed.text.endswith("data: [DONE]\n\n")


async def test_parsed_calls_are_hinted_once_per_reply_and_an_explicit_hint_wins():
    client = _StubClient(TOOL_CALL)
    body = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(client)), base_url="http://t") as http:
        await http.post("/v1/chat/completions", json=body)  # no program: nothing to hint
        assert client.log == []
        for stream in (False, True):
            await http.post("/v1/chat/completions", json={**body, "stream": stream, "program_id": f"p-{stream}"})
        await http.post("/v1/chat/completions", json={**body, "program_id": "p-x",
                                                      "tool_hint": ["search", {"name": "bash", "arguments": {
                                                          "command": "cd /repo && FOO=1 pytest -x"}}]})
        await http.post("/v1/completions", json={"prompt": [1, 2], "program_id": "p-c", "tool_hint": "grep"})
        await http.post("/v1/chat/completions", json={**body, "program_id": "p-none", "tool_hint": []})
        await http.post("/v1/chat/completions", json={**body, "program_id": "p-last", "is_last_turn": True})
    assert client.log == [("hint", "p-False", ["get_weather"]), ("hint", "p-True", ["get_weather"]),
                          ("hint", "p-x", ["search", "pytest"]), ("hint", "p-c", ["grep"]),
                          ("end", "p-last")]  # a last turn's calls keep nothing: no hint


async def test_stream_cleanup_completes_when_the_client_disconnects():
    """A disconnect cancels the stream's scope; ``end_program`` must still reach the client (its KV, its load)."""
    client = _StubClient("Hi", hang=True)
    body = json.dumps({"messages": ASK, "stream": True, "program_id": "p-1", "is_last_turn": True}).encode()
    first_chunk, asked = asyncio.Event(), []

    async def receive():
        if not asked:
            asked.append(1)
            return {"type": "http.request", "body": body, "more_body": False}
        await first_chunk.wait()  # hang up once streaming has begun
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.body" and message.get("body"):
            first_chunk.set()

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "root_path": "", "headers": [(b"content-type", b"application/json")],
             "client": ("127.0.0.1", 1), "server": ("t", 80)}
    await asyncio.wait_for(create_app(client)(scope, receive, send), 10)
    assert client.ended == ["p-1"]


def test_token_text_decodes_each_token_once():
    class Tokenizer:  # byte-level BPE: "Ġ" is the space byte
        all_special_ids, lookups = [], 0

        def encode(self, text, add_special_tokens=False):
            return [7]

        def convert_ids_to_tokens(self, ids):
            self.lookups += 1
            return ["Ġa"] if isinstance(ids, list) else "Ġa"

    tok = Tokenizer()
    tt = TokenText(tok)
    before = tok.lookups
    entries = [tt.entry(7, -0.5) for _ in range(3)]
    assert entries[0] == {"token": " a", "logprob": -0.5, "bytes": [32, 97]} and tok.lookups - before == 1
