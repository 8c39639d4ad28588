"""Simulated replay on a fixed seed: under memory pressure tether's pins and admission beat
the baseline and Continuum's rule on mean JCT without a worse p99 TTFT; without pressure
pinning costs nothing."""

from __future__ import annotations

import pytest

from tether.workloads.metrics import summarize
from tether.engine.policies import parse_policies
from tether.workloads.replay import run_policies
from tether.workloads.replay_common import ReplaySettings
from tether.workloads.synth import synthesize

CONCURRENCY = 8


@pytest.fixture(scope="module")
def trace():
    return synthesize(64, seed=0, concurrency=CONCURRENCY)


def _jct(trace, blocks: int) -> dict[str, dict]:
    runs = run_policies(trace, parse_policies("baseline,continuum-fixed,tether"),
                        ReplaySettings(kv_blocks=blocks, host_kv_blocks=blocks, concurrency=CONCURRENCY))
    return {r.policy: summarize(r) for r in runs}


def _working_set_blocks(trace) -> float:
    """Blocks the concurrently active programs would hold at their full context."""
    mean_total = sum(p.total_tokens for p in trace.programs) / len(trace.programs)
    return CONCURRENCY * mean_total / 16


def test_under_pressure_tether_lowers_mean_jct(trace):
    s = _jct(trace, int(0.35 * _working_set_blocks(trace)))
    base, fixed, ours = (s[k]["jct_mean"] for k in ("baseline", "continuum-fixed", "tether"))
    assert base / ours >= 1.5, s
    assert fixed / ours >= 1.15, s
    assert s["tether"]["ttft_p99"] <= s["baseline"]["ttft_p99"], s  # pins never hold first tokens back
    assert s["tether"]["prefix_hit_rate"] > s["baseline"]["prefix_hit_rate"]


def test_without_pressure_tether_matches_baseline(trace):
    s = _jct(trace, int(4 * _working_set_blocks(trace)))
    assert abs(s["tether"]["jct_mean"] / s["baseline"]["jct_mean"] - 1) <= 0.02, s
