"""Metrics on a small hand-built run whose answers are worked out by hand."""

from __future__ import annotations

import doctest
import math
import random

import numpy as np
import pytest

from tether.workloads import metrics
from tether.workloads.metrics import percentile, summarize, time_weighted_mean
from tether.workloads.records import KVSample, ReplayRun, TurnRecord


def small_run(policy: str = "fcfs", with_stats: bool = True) -> ReplayRun:
    """Three programs; every expected number below is derived in comments."""
    turns = [
        # a: arrives 0; ttft 0.5, tpot (1.5-0.5)/10 = 0.1, then a 2 s tool
        TurnRecord("a", 0, 0.0, 0.5, 1.5, 100, 0, 11, tool_name="pytest", tool_duration_s=2.0),
        # a's last turn: ttft 0.5, single output token -> no tpot; JCT a = 5.0 - 0 = 5
        TurnRecord("a", 1, 3.5, 4.0, 5.0, 200, 100, 1),
        # b: arrives 1; ttft 1.0, tpot (3-2)/20 = 0.05; JCT b = 3 - 1 = 2
        TurnRecord("b", 0, 1.0, 2.0, 3.0, 100, 50, 21, preemptions=1),
        # c: arrives 2; ttft 0.5, tpot (6-3)/30 = 0.1; JCT c = 6 - 2 = 4
        TurnRecord("c", 0, 2.5, 3.0, 6.0, 50, 0, 31),
    ]
    kv = [  # deliberately out of order: summarize must sort by time
        KVSample(3.0, 20, 8, 1),
        KVSample(0.0, 10, 0, 0),
        KVSample(2.0, 30, 5, 2),
        KVSample(6.0, 0, 0, 4),
    ]
    return ReplayRun(
        policy=policy, mode="sim", turns=turns,
        program_arrivals={"a": 0.0, "b": 1.0, "c": 2.0},
        kv_samples=kv, kv_total_blocks=64,
        engine_stats={"preemptions": 3, "recomputed_tokens": 120} if with_stats else {},
    )


def test_summary_known_answers():
    s = summarize(small_run())
    # JCTs sorted [2, 4, 5]; linear-interpolation rank q/100 * (n-1)
    assert s["programs"] == 3 and s["turns"] == 4
    assert s["jct_mean"] == pytest.approx(11 / 3)
    assert s["jct_p50"] == pytest.approx(4.0)
    assert s["jct_p90"] == pytest.approx(4.8)   # rank 1.8: 4 + 0.8 * (5 - 4)
    assert s["jct_p95"] == pytest.approx(4.9)
    assert s["jct_p99"] == pytest.approx(4.98)
    # TTFTs sorted [0.5, 0.5, 0.5, 1.0]; p99 rank 2.97 -> 0.5 + 0.97 * 0.5
    assert s["ttft_p50"] == pytest.approx(0.5)
    assert s["ttft_p99"] == pytest.approx(0.985)
    # TPOTs sorted [0.05, 0.1, 0.1]; the 1-token turn is excluded
    assert s["tpot_p50"] == pytest.approx(0.1)
    assert s["tpot_p99"] == pytest.approx(0.1)
    # makespan = last finish 6 - first arrival 0; 64 output tokens
    assert s["makespan_s"] == pytest.approx(6.0)
    assert s["jobs_per_s"] == pytest.approx(0.5)
    assert s["tokens_per_s"] == pytest.approx(64 / 6)
    assert s["prefix_hit_rate"] == pytest.approx(150 / 450)
    # engine stats win over the per-turn sum
    assert s["preemptions"] == 3 and s["recomputed_tokens"] == 120
    # KV: step function 10 on [0,2), 30 on [2,3), 20 on [3,6) -> 110 / 6 (plain mean would be 15)
    assert s["kv_mean_blocks"] == pytest.approx(110 / 6)
    assert s["kv_peak_blocks"] == 30 and s["kv_peak_pinned_blocks"] == 8
    assert s["kv_total_blocks"] == 64


def test_without_engine_stats_falls_back_to_turns():
    s = summarize(small_run(with_stats=False))
    assert s["preemptions"] == 1          # summed from turns
    assert math.isnan(s["recomputed_tokens"])  # unknown, not 0


def test_percentile_matches_numpy_linear():
    rng = random.Random(0)
    for n in (1, 2, 5, 17):
        xs = [rng.uniform(0, 100) for _ in range(n)]
        for q in (0, 37.5, 50, 90, 95, 99, 100):
            assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_time_weighted_mean_degenerate_spans():
    assert time_weighted_mean([KVSample(1.0, 7, 0, 0)]) == 7
    assert time_weighted_mean([KVSample(1.0, 2, 0, 0), KVSample(1.0, 4, 0, 0)]) == 3


def test_empty_inputs_raise_clearly():
    with pytest.raises(ValueError, match="no turns"):
        summarize(ReplayRun("empty", "sim"))
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match="no KV samples"):
        time_weighted_mean([])
    with pytest.raises(ValueError, match="percentile q"):
        percentile([1.0], 101)


def test_inconsistent_programs_raise():
    run = small_run()
    del run.program_arrivals["b"]
    with pytest.raises(ValueError, match="without an arrival"):
        summarize(run)
    run = small_run()
    run.program_arrivals["ghost"] = 0.0
    with pytest.raises(ValueError, match="no turns"):
        summarize(run)


def test_undefined_values_are_nan():
    run = small_run()
    run.kv_samples = []
    for t in run.turns:
        t.output_tokens = 1
    s = summarize(run)
    for k in ("tpot_p50", "tpot_p99", "kv_peak_blocks", "kv_mean_blocks", "kv_peak_pinned_blocks"):
        assert math.isnan(s[k]), k


def test_docstring_examples():
    assert doctest.testmod(metrics).failed == 0
