"""Pluggable parts are registered by name: a new TTL rule is one class plus a registration,
and the config names it; unknown names are refused with the known ones listed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine_helpers import greedy, make_core, req, run_all
from tether.engine import EngineConfig
from tether.engine.clock import VirtualClock
from tether.engine.model import MODEL_ARCHITECTURES
from tether.engine.policies import POLICY_PRESETS
from tether.engine.ttl_policy import TTL_RULES, PinDecision, TTLPolicy


class AlwaysFive(TTLPolicy):
    """A toy rule: pin every program for 5 s, whatever the tool."""

    name = "always-5s"

    def decide(self, q, predictor, now) -> PinDecision:
        return PinDecision(5.0, 1.0)


@pytest.fixture
def always_five():
    TTL_RULES.register(AlwaysFive.name, AlwaysFive)
    yield AlwaysFive.name
    TTL_RULES.unregister(AlwaysFive.name)


def test_a_toy_ttl_rule_registered_here_drives_pins(tiny_model, always_five):
    clock = VirtualClock()
    core = make_core(tiny_model, clock=clock, pin_policy=always_five)
    core.add_request(req("t1", list(range(3, 40)), greedy(2), program_id="p"))
    run_all(core)
    assert core.tool_hint("p", ["anything"]) == 32  # 2 full blocks pinned
    clock.advance(4.9)
    core.expire_pins()
    assert core.stats()["active_pins"] == 1
    clock.advance(0.2)
    core.expire_pins()
    assert core.stats()["active_pins"] == 0 and core.stats()["pins_expired"] == 1
    core.check_no_leaks()


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValidationError, match="unknown TTL rule 'nope'; known: none, continuum-fixed"):
        EngineConfig(pin_policy="nope")
    with pytest.raises(ValidationError, match="unknown queue policy"):
        EngineConfig(queue_policy="lifo")
    with pytest.raises(ValueError, match="unknown policy 'vllm'; known: baseline, baseline-offload"):
        EngineConfig(policy="vllm")
    with pytest.raises(ValueError, match="already registered"):
        TTL_RULES.register("none", AlwaysFive)
    assert {"llama", "mistral", "qwen2"} <= set(MODEL_ARCHITECTURES)


def test_presets_fill_only_what_the_config_does_not_set():
    assert EngineConfig().policy == "tether" and EngineConfig().queue_policy == "program-fcfs"
    base = EngineConfig(policy="baseline")
    assert (base.queue_policy, base.pin_policy, base.host_tier) == ("fcfs", "none", "off")
    assert EngineConfig(policy="baseline", host_tier="all").host_tier == "all"  # an explicit field wins
    assert EngineConfig(policy="baseline-offload").host_blocks(100) == 100  # the host tier as big as the pool
    assert EngineConfig(policy="tether", host_kv_blocks=0).host_blocks(100) == 0
    assert set(POLICY_PRESETS) == {"baseline", "baseline-offload", "continuum-fixed", "tether"}
