"""A simulated replay writes the spans a real run would, on its virtual clock; Chrome export."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from tether.cli import main as cli_main
from tether.engine.policies import parse_policies
from tether.runtime import tracing
from tether.runtime.tracing.store import list_runs, read_run
from tether.runtime.tracing.view import build_view
from tether.workloads.replay import run_policies
from tether.workloads.replay_common import ReplaySettings

sys.path.insert(0, str(Path(__file__).parents[1] / "workloads"))
from small_trace import small_trace  # noqa: E402

SETTINGS = ReplaySettings(kv_blocks=40, block_size=16, max_num_batched_tokens=256)  # small: evictions happen


def _replay(trace_dir=None):
    trace = small_trace(programs=6, turns=4, append=60, output=8, tool_s=0.5, gap_s=0.1)
    return trace, run_policies(trace, parse_policies("tether"), SETTINGS, "sim", trace_dir=trace_dir)[0]


def test_sim_replay_writes_spans_on_the_virtual_clock(tmp_path):
    trace, run = _replay(tmp_path)
    assert tracing.tracer() is None  # the replay closed its tracer
    [run_dir] = list_runs(tmp_path)
    assert run.meta["trace_dir"] == str(run_dir) and run_dir.name.endswith("replay-sim-tether")
    spans = read_run(run_dir)
    names = Counter(s.name.split(" ")[0] for s in spans)
    turns = sum(len(p.turns) for p in trace.programs)
    tools = sum(1 for p in trace.programs for t in p.turns[:-1] if t.tool)
    assert names["invoke_agent"] == len(trace.programs)
    assert names["chat"] == turns and names["execute_tool"] == tools
    # a preempted request queues (and prefills) again: one more queue span per preemption
    assert names["tether.engine.queue"] == turns + sum(t.preemptions for t in run.turns)
    assert names["tether.engine.decode"] >= turns

    # each chat span lasts exactly what the replay recorded for its turn (virtual seconds)
    chats = {s.attributes["tether.request.id"]: s for s in spans if s.name.startswith("chat ")}
    for rec in run.turns:
        chat = chats[f"{rec.program_id}/{rec.turn}"]
        assert abs((chat.end_ns - chat.start_ns) / 1e9 - (rec.finished_s - rec.submitted_s)) < 1e-6
        assert chat.attributes["gen_ai.usage.input_tokens"] == rec.prompt_tokens
        assert chat.attributes["gen_ai.usage.cache_read.input_tokens"] == rec.cached_tokens
    # the pool is under pressure: evictions are recorded, and pins with their ends
    events = Counter(e["name"] for s in spans for e in s.events)
    assert events["tether.kv.eviction"] > 0 and events["tether.kv.occupancy"] > 0
    assert events["tether.kv.pin"] == run.engine_stats["pins"]
    ends = events["tether.kv.pin_hit"] // 2 + events["tether.kv.pin_expiry"] + events["tether.kv.pin_release"]
    assert events["tether.kv.pin"] and ends >= events["tether.kv.pin"] - 1  # at most a replaced pin left

    view = build_view(spans)
    assert sorted(lane["label"] for lane in view.lanes) == sorted(p.program_id for p in trace.programs)

    # tracing does not change what the simulation computes
    _, plain = _replay()
    assert [(t.program_id, t.turn, t.finished_s) for t in plain.turns] == \
        [(t.program_id, t.turn, t.finished_s) for t in run.turns]


def test_chrome_export_of_a_replay(tmp_path, capsys):
    _replay(tmp_path / "store")
    out = tmp_path / "trace.json"
    assert cli_main(["trace", "export", "--chrome", str(out), "--trace-dir", str(tmp_path / "store")]) == 0
    events = json.loads(out.read_text())["traceEvents"]
    phases = Counter(e["ph"] for e in events)
    assert phases["X"] > 0 and phases["C"] > 0 and phases["i"] > 0
    lanes = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert lanes == {"KV pool"} | {f"p{i}" for i in range(6)}
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in events if e["ph"] == "X")
    assert "wrote" in capsys.readouterr().out


def test_export_without_runs_says_what_to_do(tmp_path, capsys):
    assert cli_main(["trace", "export", "--chrome", str(tmp_path / "x.json"), "--trace-dir", str(tmp_path)]) == 2
    assert "tether demo" in capsys.readouterr().err


async def test_serve_mounts_the_ui_over_the_store(tmp_path):
    import httpx

    from tether.runtime.client import LLMClient
    from tether.runtime.server import create_app

    class _Idle(LLMClient):
        model_name, tokenizer = "m", None

        async def generate(self, request):
            yield None

        async def abort(self, request_id): ...
        async def stats(self): return {}
        async def tool_hint(self, program_id, tool_keys): ...
        async def end_program(self, program_id): ...

    _replay(tmp_path)
    [run_dir] = list_runs(tmp_path)
    transport = httpx.ASGITransport(app=create_app(_Idle(), ui_root=tmp_path))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        page = await http.get("/ui/")
        assert page.status_code == 200 and "static/app.js" in page.text
        assert (await http.get("/ui/static/app.js")).status_code == 200
        assert [r["name"] for r in (await http.get("/ui/api/runs")).json()["runs"]] == [run_dir.name]
        view = (await http.get(f"/ui/api/runs/{run_dir.name}")).json()
        assert len(view["lanes"]) == 6 and view["counter"]
        missing = await http.get("/ui/api/runs/nope")
        assert missing.status_code == 404 and "/ui/api/runs" in missing.text
