"""Tracing: a program's spans (GenAI conventions + tether's engine phases and KV events) as a user
runs it, read back from the local OTLP-JSON store."""

from __future__ import annotations

import json

import pytest
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes

from tether.agents import Agent, Context, tool
from tether.engine import Engine, EngineConfig
from tether.engine.events import EngineEvent
from tether.runtime import tracing
from tether.runtime.chat_format import ToolCall
from tether.runtime.program import AgentProgramImpl
from tether.runtime.tool_executor import LocalToolExecutor
from tether.runtime.tracing.engine_spans import attach
from tether.runtime.tracing.store import list_runs, read_run
from tether.runtime.tracing.view import build_view

GEN_AI_NAMES = {v for k, v in vars(gen_ai_attributes).items() if k.startswith("GEN_AI_") and isinstance(v, str)}


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class _InProcessLLM:
    """The program's LLM client, in-process; a byte-level stand-in tokenizer (the tiny model has none)."""

    model_name = "tiny"

    def __init__(self, engine: Engine):
        self.engine = engine

    async def complete(self, request):
        ids = [3 + b % 120 for b in json.dumps(request.messages).encode()][:400]
        request = request.model_copy(update={"prompt_token_ids": ids, "messages": None})
        return [o async for o in self.engine.generate(request)]

    async def tool_hint(self, program_id, keys):
        self.engine.tool_hint(program_id, keys)

    async def end_program(self, program_id):
        self.engine.end_program(program_id)


@pytest.fixture
def traced(tmp_path):
    yield tmp_path
    tracing.disable()


def _engine(tiny_model) -> Engine:
    return Engine(EngineConfig(num_kv_blocks=96, block_size=16, max_num_batched_tokens=128), hf_model=tiny_model)


summarizer = Agent("summarizer", "Summarize.", max_turns=1, max_tokens=4, temperature=0)


async def _worker(ctx: Context, input: str):
    msgs = [{"role": "system", "content": "You add numbers with the add tool. " * 3},
            {"role": "user", "content": input}]
    first = await ctx.chat(msgs, max_tokens=6, temperature=0)
    call = ToolCall("add", {"a": 2, "b": 3})
    [result] = await ctx.call_tools([call], tools=[add])
    msgs += [{"role": "assistant", "content": first.text}, {"role": "tool", "content": result.content}]
    second = await ctx.chat(msgs, max_tokens=6, temperature=0)
    return first, second, call


async def _run_program(engine: Engine, program_id: str = "prog-1"):
    impl = AgentProgramImpl([], None, LocalToolExecutor(), None, "tiny")
    impl.llm = _InProcessLLM(engine)
    out = {}

    async def entry(services):
        ctx = Context(services, "main")
        out["worker"] = await ctx.run(_worker, input="What is 2 + 3? Use the tool, then answer.")
        out["summary"] = await ctx.run(summarizer, input="2 + 3 = 5")
        return "done"
    res = await impl.run(program_id, entry)
    assert res.ok, res.error
    return out


async def test_a_programs_story_is_in_the_store(traced, tiny_model):
    run_dir = tracing.enable(traced, kind="test")
    engine = _engine(tiny_model)
    spans_listener = attach(engine.core)
    out = await _run_program(engine)
    await engine.close()
    spans_listener.close()
    tracing.disable()
    first, second, call = out["worker"]

    spans = read_run(run_dir)
    by_name: dict[str, list] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    [program] = by_name["invoke_agent prog-1"]
    assert program.parent_id is None and program.attributes["gen_ai.operation.name"] == "invoke_agent"
    [worker] = by_name["invoke_agent _worker"]
    [summ] = by_name["invoke_agent summarizer"]  # an Agent run via ctx.run gets one span, not two
    assert worker.parent_id == summ.parent_id == program.span_id
    assert len({s.trace_id for s in spans if s.name != "tether.kv.pool"}) == 1

    chats = sorted(by_name["chat tiny"], key=lambda s: s.start_ns)
    assert len(chats) == 3
    for chat, reply in zip(chats, [first, second]):
        a = chat.attributes
        assert chat.parent_id == worker.span_id
        assert a["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
        assert a["gen_ai.usage.output_tokens"] == reply.usage.output_tokens
        assert a["gen_ai.usage.cache_read.input_tokens"] == reply.usage.cached_tokens
        assert a["gen_ai.response.finish_reasons"] == [reply.finish_reason]
        assert a["gen_ai.request.max_tokens"] == 6 and a["gen_ai.request.temperature"] == 0
        assert "gen_ai.input.messages" not in a  # contents only when the user opts in
        phases = sorted((s for s in spans if s.parent_id == chat.span_id and s.name.startswith("tether.engine.")),
                        key=lambda s: s.start_ns)
        assert [p.name for p in phases] == ["tether.engine.queue", "tether.engine.prefill", "tether.engine.decode"]
        assert phases[0].start_ns >= chat.start_ns and phases[-1].end_ns <= chat.end_ns
        assert all(p.end_ns <= q.start_ns + 1000 for p, q in zip(phases, phases[1:]))
        assert phases[1].attributes["tether.engine.ttft_s"] > 0
    assert chats[2].parent_id == summ.span_id

    # the second turn reuses the first turn's KV: a prefix hit, and the pin the tool call took was hit
    assert second.usage.cached_tokens > 0
    events = [e["name"] for s in spans if s.parent_id == chats[1].span_id for e in s.events]
    assert "tether.kv.prefix_hit" in events
    assert engine.core.stats()["pins"] >= 1
    [pin] = by_name["tether.kv.pin"]
    assert pin.attributes["tether.kv.ttl_s"] > 0 and pin.attributes["tether.kv.pin.outcome"] == "pin_hit"
    assert [e["name"] for e in pin.events] == ["tether.kv.pin", "tether.kv.pin_hit"]
    assert "tether.kv.pin_hit" in events

    [tool_span] = by_name["execute_tool add"]
    assert tool_span.parent_id == worker.span_id
    assert tool_span.attributes["gen_ai.tool.name"] == "add"
    assert tool_span.attributes["gen_ai.tool.call.id"] == call.id
    assert chats[0].end_ns <= tool_span.start_ns <= tool_span.end_ns <= chats[1].start_ns

    # the pool's occupancy is sampled on its own track
    pool = [e for s in by_name["tether.kv.pool"] for e in s.events if e["name"] == "tether.kv.occupancy"]
    assert pool and all(e["attributes"]["tether.kv.total_blocks"] == 96 for e in pool)

    # every gen_ai.* name is one of the semantic conventions' constants
    used = {k for s in spans for k in s.attributes if k.startswith("gen_ai.")}
    assert used and used <= GEN_AI_NAMES, used - GEN_AI_NAMES

    # the UI's view: one lane, the program's, with markers for the KV events
    view = build_view(spans)
    assert [lane["label"] for lane in view.lanes] == ["prog-1"]
    assert {m["name"] for m in view.markers} >= {"tether.kv.prefix_hit", "tether.kv.pin", "tether.kv.pin_hit"}


async def test_contents_only_when_asked(traced, tiny_model):
    run_dir = tracing.enable(traced, kind="content", capture_content=True)
    engine = _engine(tiny_model)
    await _run_program(engine, "prog-2")
    await engine.close()
    tracing.disable()
    spans = read_run(run_dir)
    chat = next(s for s in spans if s.name == "chat tiny")
    assert "What is 2 + 3?" in json.loads(chat.attributes["gen_ai.input.messages"])[1]["content"]
    assert next(s for s in spans if s.name == "execute_tool add").attributes["gen_ai.tool.call.result"] == "5"


def test_off_means_no_listener_and_no_files(tmp_path, tiny_model):
    tracing.disable()
    engine = _engine(tiny_model)
    assert attach(engine.core) is None
    assert not engine.core.events.active  # the engine does not even build its events
    with tracing.span("chat x") as s:
        assert s is None and tracing.current_traceparent() is None
    assert list_runs(tmp_path) == []


async def test_reuse_is_an_arrow_from_producer_to_consumer(traced, tiny_model):
    """A ``reuse`` event names the request whose KV was placed; the UI draws an arrow between their spans."""
    run_dir = tracing.enable(traced, kind="reuse")
    engine = _engine(tiny_model)
    listener = attach(engine.core)
    bus, now = engine.core.events, engine.core.clock.now
    with tracing.span("chat producer", {"tether.program.id": "a"}):
        bus.emit("queued", now(), "r-a", "a", prompt_tokens=40)
    bus.emit("scheduled", now(), "r-a", "a")
    bus.emit("first_token", now(), "r-a", "a")
    bus.emit("finished", now(), "r-a", "a", reason="stop", output_tokens=3)
    with tracing.span("chat consumer", {"tether.program.id": "b"}):
        bus.emit("queued", now(), "r-b", "b", prompt_tokens=60)
    bus.emit("reuse", now(), "r-b", "b", segment="seg-1", source_request_id="r-a", source_program_id="a",
             placed=32, recomputed=2, position=8)
    listener(EngineEvent("finished", now(), "r-b", "b", {"reason": "stop", "output_tokens": 1}))
    tracing.disable()
    view = build_view(read_run(run_dir))
    [arrow] = view.arrows
    src, dst = view.spans[arrow["from"]], view.spans[arrow["to"]]
    assert (src.name, src.attrs["tether.request.id"]) == ("tether.engine.prefill", "r-a")
    assert (dst.name, dst.attrs["tether.request.id"]) == ("tether.engine.queue", "r-b")
    ev = next(e for e in dst.events if e["name"] == "tether.kv.reuse")
    assert ev["attrs"]["tether.kv.reuse.placed"] == 32 and ev["attrs"]["tether.kv.segment"] == "seg-1"


def test_traceparent_names_the_callers_span(traced, tiny_model):
    """What the replica does with the ``traceparent`` in its call envelope: the engine's spans hang
    under the caller's span even though the request is queued outside it."""
    run_dir = tracing.enable(traced, kind="tp")
    engine = _engine(tiny_model)
    listener = attach(engine.core)
    with tracing.span("chat remote") as caller:
        tp = tracing.current_traceparent()
    assert tp.startswith(f"00-{caller.get_span_context().trace_id:032x}-{caller.get_span_context().span_id:016x}-")
    listener.expect("r-1", tracing.spans.parent_context(tp))
    engine.core.events.emit("queued", engine.core.clock.now(), "r-1", None, prompt_tokens=5)
    engine.core.events.emit("finished", engine.core.clock.now(), "r-1", None, reason="abort", output_tokens=0)
    tracing.disable()
    [queue] = [s for s in read_run(run_dir) if s.name == "tether.engine.queue"]
    assert queue.parent_id == f"{caller.get_span_context().span_id:016x}"


def test_bad_otlp_endpoint_is_refused_with_what_to_fix(tmp_path):
    with pytest.raises(ValueError, match="http"):
        tracing.enable(tmp_path, otlp_endpoint="localhost:4318")


def test_otlp_endpoint_receives_the_spans_too(traced):
    """``--otlp-endpoint``: spans also go over OTLP/HTTP (protobuf) to a collector, here a local stand-in."""
    import http.server
    import threading

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    got: list[tuple[str, str, bytes]] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            got.append((self.path, self.headers["Content-Type"], self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass
    srv = http.server.HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        run_dir = tracing.enable(traced, kind="otlp", otlp_endpoint=f"http://127.0.0.1:{srv.server_port}/v1/traces")
        with tracing.span("execute_tool ls", {"gen_ai.tool.name": "ls"}):
            pass
        tracing.disable()  # flushes the exporter
    finally:
        srv.shutdown()
    [(path, ctype, body)] = got
    assert path == "/v1/traces" and ctype == "application/x-protobuf"
    msg = ExportTraceServiceRequest.FromString(body)
    assert [s.name for rs in msg.resource_spans for ss in rs.scope_spans for s in ss.spans] == ["execute_tool ls"]
    assert [s.name for s in read_run(run_dir)] == ["execute_tool ls"]  # and the local store has it as well
