"""The analytic (roofline) latency profile: model shapes, step times, KV pool sizing, naming, and a simulated
replay on it; and the sim-vs-real comparison's arithmetic."""

from __future__ import annotations

import json

import pytest

from tether.engine.latency_profile import LatencyProfile
from tether.engine.policies import parse_policies
from tether.workloads.analytic_profile import MODELS, analytic_profile, kv_pool_blocks, load_profile
from tether.workloads.replay import run_policies
from tether.workloads.replay_common import ReplaySettings
from tether.workloads.sim_vs_real import compare, markdown, plot
from tether.workloads.synth import synthesize


def test_model_shapes_match_the_published_parameter_counts():
    assert MODELS["llama-3.1-8b"].params == pytest.approx(8.03e9, rel=0.01)
    assert MODELS["llama-3.1-70b"].params == pytest.approx(70.6e9, rel=0.01)
    assert MODELS["smollm2-135m"].params == pytest.approx(134.5e6, rel=0.01)
    # K and V, 32 layers, 8 KV heads of 128, 2 bytes: 128 KiB a token.
    assert MODELS["llama-3.1-8b"].kv_bytes_per_token == 2 * 32 * 8 * 128 * 2


def test_decode_is_memory_bound_and_prefill_compute_bound():
    h100 = analytic_profile("llama-3.1-8b", "H100")
    m = MODELS["llama-3.1-8b"]
    one = h100.step_time([1], [1000])
    assert one == pytest.approx(h100.base_s + h100.per_seq_s + (m.weight_bytes + 1000 * m.kv_bytes_per_token)
                                / (3.35e12 * 0.8), rel=1e-9)  # reads the weights and the KV once
    assert h100.step_time([1] * 8, [1000] * 8) < 1.2 * one  # batching decode is nearly free
    prefill = h100.step_time([2048], [2048])
    assert prefill > 5 * one  # a long prompt chunk is compute-bound
    # More bandwidth: faster decode; same FLOPs (H100 vs H200): same prefill.
    h200 = analytic_profile("llama-3.1-8b", "H200")
    assert h200.step_time([1], [1000]) < one and h200.step_time([2048], [2048]) == pytest.approx(prefill)
    assert analytic_profile("llama-3.1-8b", "A100").step_time([1], [1000]) > one


def test_kv_pool_is_gpu_memory_minus_weights():
    blocks = kv_pool_blocks("llama-3.1-8b", "H100")
    free = 80e9 * 0.9 - 2e9 - MODELS["llama-3.1-8b"].weight_bytes
    assert blocks == int(free // (MODELS["llama-3.1-8b"].kv_bytes_per_token * 16))
    assert kv_pool_blocks("llama-3.1-8b", "H200") > 2 * blocks
    with pytest.raises(ValueError, match="does not fit on 1 x H100; use more tensor parallelism"):
        kv_pool_blocks("llama-3.1-70b", "H100")
    assert kv_pool_blocks("llama-3.1-70b", "H100", tp=4) > 0


def test_profiles_by_name_round_trip_and_bad_names_say_what_is_known(tmp_path):
    p = load_profile("analytic:llama-3.1-70b@H100x4")
    assert p.meta["tp"] == 4 and p.meta["kind"] == "simulated-analytic"
    again = LatencyProfile.load(p.save(tmp_path / "p.json"))
    assert again.step_time([1, 300], [5000, 300]) == p.step_time([1, 300], [5000, 300])
    with pytest.raises(ValueError, match="unknown accelerator 'B200'; known: A100-40GB, A100, H100, H200"):
        load_profile("analytic:llama-3.1-8b@B200")
    with pytest.raises(ValueError, match="expected analytic:MODEL@ACCELERATOR"):
        load_profile("analytic:llama")


def test_simulated_replay_on_an_analytic_profile_is_faster_on_a_faster_gpu():
    trace = synthesize(6, seed=0, concurrency=3)
    settings = ReplaySettings(kv_blocks=kv_pool_blocks("llama-3.1-8b", "A100"), concurrency=3)
    jct = {}
    for gpu in ("A100", "H200"):
        [run] = run_policies(trace, parse_policies("baseline"), settings, "sim", analytic_profile("llama-3.1-8b", gpu))
        assert run.meta["profile"] == f"analytic:llama-3.1-8b@{gpu}"
        jct[gpu] = max(t.finished_s for t in run.turns)
    assert jct["H200"] < jct["A100"]


def test_sim_vs_real_errors_and_ratio_errors(tmp_path):
    real = {"baseline": {"jct_mean": 100.0, "jct_p99": 200.0, "ttft_mean": 2.0, "ttft_p99": 8.0},
            "tether": {"jct_mean": 80.0, "jct_p99": 150.0, "ttft_mean": 1.0, "ttft_p99": 4.0}}
    sim = {"baseline": {"jct_mean": 90.0, "jct_p99": 210.0, "ttft_mean": 2.0, "ttft_p99": 6.0},
           "tether": {"jct_mean": 75.0, "jct_p99": 150.0, "ttft_mean": 1.5, "ttft_p99": 4.0}}
    cmp = compare(real, sim)
    assert cmp["per_policy"]["baseline"]["jct_mean"]["error"] == pytest.approx(-0.1)
    assert cmp["per_policy"]["baseline"]["ttft_p99"]["error"] == pytest.approx(-0.25)
    assert cmp["per_policy"]["tether"]["ttft_mean"]["error"] == pytest.approx(0.5)
    r = cmp["ratios"]["tether"]  # real 100/80 = 1.25x, sim 90/75 = 1.2x
    assert (r["real"], r["sim"]) == (pytest.approx(1.25), pytest.approx(1.2)) and r["error"] == pytest.approx(-0.04)
    table = markdown(cmp)
    assert "| baseline | JCT mean | 100.00 | 90.00 | -10.0% |" in table and "| tether | baseline | 1.250x" in table
    assert plot(cmp, tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    json.dumps(cmp)
    with pytest.raises(ValueError, match="different policies"):
        compare(real, {"baseline": sim["baseline"]})


def test_sim_vs_real_reports_engine_busy_time_beside_the_errors(tmp_path):
    from tether.workloads.sim_vs_real import write_comparison

    pol = {"baseline": {"jct_mean": 100.0, "jct_p99": 200.0, "ttft_mean": 2.0, "ttft_p99": 8.0}}
    real = {"policies": pol, "meta": {"cpu": "x"},
            "engine_stats": {"baseline": {"step_busy_s": 160.0, "steps": 1000, "computed_tokens": 4000,
                                          "preemptions": 3}}}
    sim = {"policies": pol, "meta": {"profile": "p"},
           "engine_stats": {"baseline": {"step_busy_s": 144.0, "steps": 1010, "computed_tokens": 4000,
                                         "preemptions": 3}}}
    cmp = write_comparison(tmp_path, real, sim)
    assert cmp["engine"]["baseline"]["step_busy_s"]["error"] == pytest.approx(-0.1)
    assert "| baseline | engine busy (s) | 160.0 | 144.0 | -10.0% |" in (tmp_path / "sim_vs_real.md").read_text()
