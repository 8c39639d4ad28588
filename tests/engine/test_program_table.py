"""Per-program state is bounded: a program idle too long is forgotten (its pin released), and
the table never tracks more than ``max_programs``."""

from __future__ import annotations

from engine_helpers import greedy, make_core, req, run_all
from tether.engine.clock import VirtualClock


def test_an_idle_program_is_forgotten_and_its_pin_released(tiny_model):
    clock = VirtualClock()
    core = make_core(tiny_model, clock=clock, program_idle_s=100.0, pin_policy="continuum-fixed")
    core.add_request(req("t1", list(range(3, 40)), greedy(2), program_id="p"))
    run_all(core)
    assert core.tool_hint("p", ["ls"]) > 0  # pinned; the client never comes back
    clock.advance(99)
    core.expire_pins()
    assert core.stats()["programs"] == 1
    clock.advance(2)
    core.expire_pins()
    st = core.stats()
    assert st["programs"] == 0 and st["programs_expired"] == 1 and st["active_pins"] == 0
    core.check_no_leaks()


def test_the_default_idle_bound_stays_well_above_the_tool_calls_seen(tiny_model):
    clock = VirtualClock()
    core = make_core(tiny_model, clock=clock)
    core.add_request(req("a1", [5, 6, 7], greedy(1), program_id="a"))
    run_all(core)
    core.tool_hint("a", ["slow"])
    clock.advance(900)  # a 15-minute tool call
    core.add_request(req("a2", [5, 6, 7, 8], greedy(1), program_id="a"))
    run_all(core)
    core.tool_hint("a", ["slow"])
    clock.advance(1200)  # longer than 600 s, well under 10 x 900 s: still tracked
    core.expire_pins()
    assert core.stats()["programs"] == 1


def test_the_table_is_capped_and_in_flight_programs_are_kept(tiny_model):
    clock = VirtualClock()
    core = make_core(tiny_model, clock=clock, max_programs=50)
    core.add_request(req("busy", [5, 6, 7], greedy(4), program_id="busy"))  # in flight throughout
    for i in range(1000):  # hints from program ids that never send a turn
        core.tool_hint(f"ghost-{i}", ["x" * 200])
        clock.advance(0.01)
    st = core.stats()
    assert st["programs"] <= 50 and core.programs.get("busy") is not None
    assert core.programs.get("ghost-999") is not None  # the most recent stay
    run_all(core)
