"""The synthesizer: published statistics, arrivals, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from tether.workloads.synth import PROFILES, assign_arrivals, synthesize


def _summed_prompt(program) -> int:
    """Prompt tokens summed over a program's turns: each turn re-reads the whole history."""
    context = total = 0
    for t in program.turns:
        context += t.append_tokens
        total += context
        context += t.output_tokens
    return total


@pytest.fixture(scope="module")
def big():
    return synthesize(2000, seed=0, rate=2.0)


def test_statistics_match_the_swe_bench_profile(big):
    prof = PROFILES["swe-bench"]
    progs = big.programs
    turns = np.array([len(p.turns) for p in progs])
    later = np.array([t.append_tokens for p in progs for t in p.turns[1:]])
    first = np.array([p.turns[0].append_tokens for p in progs])
    outputs = np.array([t.output_tokens for p in progs for t in p.turns])
    durations = np.array([t.tool.duration_s for p in progs for t in p.turns[:-1]])
    assert turns.mean() == pytest.approx(10.9, rel=0.1) and turns.min() >= 2
    assert turns.std() == pytest.approx(2.1, rel=0.15)
    assert first.min() >= 2000 and first.max() <= 4000
    assert later.mean() == pytest.approx(prof.mean_append_later(), rel=0.1)
    assert np.median(later) == pytest.approx(prof.append_median, rel=0.1)
    assert outputs.mean() == pytest.approx(prof.mean_output(), rel=0.1)
    assert np.median(outputs) == pytest.approx(200, rel=0.1)
    assert durations.mean() == pytest.approx(prof.mean_tool_duration(), rel=0.1)
    # Continuum's ~70k tokens per program = prompt tokens summed over the turns
    assert np.mean([_summed_prompt(p) for p in progs]) == pytest.approx(70_000, rel=0.1)
    assert prof.mean_summed_prompt() == pytest.approx(70_000, rel=0.02)


def test_turn_structure_and_tool_mix(big):
    prof = PROFILES["swe-bench"]
    classes = [t.tool.tool_class for p in big.programs for t in p.turns[:-1]]
    assert all(p.turns[-1].tool is None for p in big.programs)
    assert all(t.tool.duration_drawn and t.append_messages is None for p in big.programs for t in p.turns[:-1])
    total = sum(prof.tool_mix.values())
    for cls, w in prof.tool_mix.items():
        assert classes.count(cls) / len(classes) == pytest.approx(w / total, abs=0.02)


def test_poisson_arrivals(big):
    arrivals = np.array([p.arrival_s for p in big.programs])
    gaps = np.diff(arrivals)
    assert arrivals[0] == 0.0 and (gaps >= 0).all()
    assert gaps.mean() == pytest.approx(1 / 2.0, rel=0.1)
    assert big.meta["arrival"] == "poisson" and big.meta["rate"] == 2.0


def test_closed_loop_and_batch():
    closed = synthesize(20, seed=1, concurrency=8)
    assert all(p.arrival_s == 0.0 for p in closed.programs) and closed.meta["concurrency"] == 8
    assert synthesize(5, seed=1).meta["arrival"] == "batch"
    with pytest.raises(ValueError, match="not both"):
        synthesize(5, seed=1, rate=1.0, concurrency=2)
    with pytest.raises(ValueError, match="unknown profile"):
        synthesize(5, seed=1, profile="nope")


def test_same_seed_same_trace():
    a, b = synthesize(50, seed=3, rate=1.0), synthesize(50, seed=3, rate=1.0)
    assert a == b
    assert synthesize(50, seed=4, rate=1.0).programs != a.programs
    # program i is drawn from its own stream: a shorter trace is a prefix of a longer one
    assert synthesize(20, seed=3).programs == synthesize(50, seed=3).programs[:20]


def test_coding_agent_profile_uses_tracelab_appends():
    progs = synthesize(500, seed=2, profile="coding-agent").programs
    later = np.array([t.append_tokens for p in progs for t in p.turns[1:]])
    assert np.median(later) == pytest.approx(860, rel=0.1)
    assert later.mean() == pytest.approx(PROFILES["coding-agent"].mean_append_later(), rel=0.1)


def test_assign_arrivals_gives_a_loaded_trace_poisson_arrivals():
    batch = synthesize(500, seed=6)
    t = assign_arrivals(batch, rate=4.0, seed=1)
    gaps = np.diff([p.arrival_s for p in t.programs])
    assert t.programs[0].arrival_s == 0.0 and gaps.mean() == pytest.approx(0.25, rel=0.1)
    assert [p.turns for p in t.programs] == [p.turns for p in batch.programs]
    assert t.meta["rate"] == 4.0 and t == assign_arrivals(batch, rate=4.0, seed=1)
