"""``tether bench runtime`` runs end to end, with its bare-Ray baseline measured in the same run."""

from __future__ import annotations

import pytest

from tether.runtime import bench

pytestmark = pytest.mark.timeout(300)


def test_bench_runtime_reports_tether_and_bare_ray_from_one_run(capsys):
    r = bench.main(["--calls", "20", "--programs", "40", "--json"])
    assert r["programs_ok"] == 40 and r["programs_per_s"] > 0
    for key in ("inprocess_median_ms", "actor_median_ms", "bare_1hop_median_ms", "bare_2hop_median_ms",
                "program_call_median_ms"):
        assert r[key] > 0, key
    # The ratios are what the bench is for: each is tether's overhead over the bare hop it makes.
    assert r["actor_overhead_vs_bare"] == pytest.approx(r["actor_overhead_median_ms"] / r["bare_1hop_median_ms"])
    assert r["program_overhead_vs_bare"] == pytest.approx(
        r["program_call_overhead_median_ms"] / r["bare_2hop_median_ms"])
    assert r["bare_2hop_median_ms"] > 0 and r["cpu"]
    assert '"actor_overhead_vs_bare"' in capsys.readouterr().out
