"""One tool key: the simulated replay, the real replay's program and the SDK hand the engine's
predictor the same key for the same tool call of a real trajectory."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from tether.engine.core import EngineCore
from tether.engine.latency_profile import LatencyProfile
from tether.engine.policies import parse_policies
from tether.engine.tool_key import tool_key
from tether.workloads.loaders import load_trajectories
from tether.workloads.replay import run_policies
from tether.workloads.replay_common import ReplaySettings, TurnFeeder
from tether.workloads.replay_real import _plan, replay_program

TRACES = Path(__file__).parents[1] / "data" / "traces"
PROFILE = LatencyProfile(name="test", base_s=0.005, per_token_s=2e-4)


def _sim_keys(trace, monkeypatch) -> dict[str, list[list[str]]]:
    seen: dict[str, list[list[str]]] = {}
    real_hint = EngineCore.tool_hint

    def spy(self, program_id, keys):
        seen.setdefault(program_id, []).append(list(keys))
        return real_hint(self, program_id, keys)
    monkeypatch.setattr(EngineCore, "tool_hint", spy)
    run_policies(trace, parse_policies("tether"), ReplaySettings(kv_blocks=20000), "sim", PROFILE)
    return seen


def _real_keys(trace) -> dict[str, list[list[str]]]:
    """What each program sends when it runs inside the runtime (its entry, with a stand-in LLM)."""
    seen: dict[str, list[list[str]]] = {}

    class LLM:
        async def complete(self, request):
            m = SimpleNamespace(ttft=0.0, decode_time=0.0, prompt_tokens=len(request.prompt_token_ids),
                                prefix_hit_tokens=0, output_tokens=1, preemptions=0)
            return [SimpleNamespace(token_ids=list(request.sampling.forced_output_ids), metrics=m)]

        async def tool_hint(self, program_id, keys):
            seen.setdefault(program_id, []).append(list(keys))

    feeder = TurnFeeder(trace)
    for i, p in enumerate(feeder.trace.programs):
        asyncio.run(replay_program(SimpleNamespace(llm=LLM(), program_id=p.program_id), _plan(feeder, i, 0.0), 0.0))
    return seen


def test_sim_real_and_sdk_give_the_predictor_the_same_keys(monkeypatch):
    trace = load_trajectories(TRACES / "swe-agent_test-repo-1c2844.traj")
    mini = load_trajectories(TRACES / "mini-swe-agent_github_issue.traj.json")
    trace.programs += mini.programs
    sim, real = _sim_keys(trace, monkeypatch), _real_keys(trace)
    assert sim == real and sum(len(v) for v in sim.values()) >= 5
    for program in trace.programs:
        for turn, keys in zip(program.turns[:-1], sim[program.program_id]):
            command = (turn.tool.arguments or {}).get("command") if isinstance(turn.tool.arguments, dict) else None
            if command:  # the SDK's shell tool, running the same command, is keyed the same way
                assert keys == [tool_key("shell", {"command": command})]
    # A shell command is keyed by the program it runs, past `cd x &&` and env assignments.
    assert tool_key("bash", {"command": "cd /testbed && FOO=1 pytest -x tests/"}) == "pytest"
