"""The side-by-side table and the result files (JSON, CSVs, PNGs)."""

from __future__ import annotations

import csv
import doctest
import json
import math
from pathlib import Path

import pytest

from tether.workloads import report
from tether.workloads.metrics import summarize
from tether.workloads.records import KVSample, ReplayRun, TurnRecord
from tether.workloads.report import REQUIRED_KEYS, format_table, write_results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_for(policy: str, slow: float = 1.0) -> ReplayRun:
    """Two programs, three turns; ``slow`` stretches the times so policies differ."""
    turns = [
        TurnRecord("p0", 0, 0.0, 0.2 * slow, 1.0 * slow, 100, 0, 9, "grep", 0.5),
        TurnRecord("p0", 1, 1.5 * slow, 1.6 * slow, 2.0 * slow, 150, 100, 5),
        TurnRecord("p1", 0, 0.5, 0.9 * slow, 1.9 * slow, 80, 0, 1, preemptions=1),
    ]
    kv = [KVSample(0.0, 4, 0, 0), KVSample(1.0, 9, 3, 0), KVSample(2.0 * slow, 0, 0, 6)]
    return ReplayRun(policy, "sim", turns, {"p0": 0.0, "p1": 0.5}, kv, kv_total_blocks=16,
                     meta={"seed": 7, "scale": slow})


def test_format_table_columns_rows_and_width():
    sums = {"vllm": summarize(run_for("vllm", 1.5)), "continuum": summarize(run_for("continuum"))}
    sums["continuum"]["recomputed_tokens"] = float("nan")
    text = format_table(sums)
    lines = text.splitlines()
    assert lines[0].split()[1:] == ["vllm", "continuum"]
    assert len({len(line) for line in lines}) == 1     # fixed width
    assert any(line.startswith("JCT p95 (s)") for line in lines)
    assert any(line.startswith("TTFT p50 (ms)") for line in lines)
    recomputed = next(line for line in lines if line.startswith("recomputed"))
    assert recomputed.split()[-1] == "-"                # NaN shown as '-'
    with pytest.raises(ValueError):
        format_table({})


def test_write_results_files(tmp_path: Path):
    runs = [run_for("vllm", 1.5), run_for("continuum/ttl")]  # '/' must not break file names
    res = write_results(tmp_path / "out", runs, {"trace": "tiny.jsonl", "programs": 2})

    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["meta"]["trace"] == "tiny.jsonl" and data["meta"]["mode"] == "sim"
    assert data["meta"]["seed"] == 7                     # common run meta kept at top level
    assert data["meta"]["per_policy_meta"]["vllm"]["scale"] == 1.5
    assert set(data["policies"]) == {"vllm", "continuum/ttl"}
    for summary in data["policies"].values():
        assert set(REQUIRED_KEYS) <= set(summary)
    assert data["policies"]["vllm"]["recomputed_tokens"] is None  # NaN -> null

    for name, path in res["files"]["turns_csv"].items():
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == 3
        assert {"program_id", "cached_tokens", "tool_duration_s", "ttft_s", "tpot_s"} <= set(rows[0])
        single = next(r for r in rows if r["program_id"] == "p1")
        assert single["tpot_s"] == ""                   # 1 output token: no TPOT
        assert math.isclose(float(rows[0]["ttft_s"]), 0.2 * (1.5 if name == "vllm" else 1.0))

    pngs = [res["plots"]["jct_cdf"], res["plots"]["kv_usage"], *res["plots"]["timeline"].values()]
    assert len(pngs) == 4
    for p in pngs:
        head = Path(p).read_bytes()[:8]
        assert head == PNG_MAGIC, p
    assert "JCT mean (s)" in (tmp_path / "out" / "table.txt").read_text()


def test_write_results_rejects_bad_input(tmp_path: Path):
    with pytest.raises(ValueError, match="at least one run"):
        write_results(tmp_path, [], {})
    with pytest.raises(ValueError, match="unique"):
        write_results(tmp_path, [run_for("x"), run_for("x")], {})


def test_docstring_examples():
    assert doctest.testmod(report).failed == 0


def test_runs_file_round_trips_and_drops_only_repeated_kv_samples(tmp_path: Path):
    run = run_for("vllm")
    run.kv_samples[1:1] = [KVSample(0.5, 4, 0, 0), KVSample(0.7, 4, 0, 0)]  # repeats: left out
    (back,) = report.load_runs(report.save_runs([run], tmp_path / "runs.json.gz"))
    assert back.turns == run.turns and back.program_arrivals == run.program_arrivals
    assert back.kv_samples == [run.kv_samples[0], *run.kv_samples[3:]]
    assert summarize(back) == summarize(run)  # the time-weighted KV mean included
    again = tmp_path / "again.json.gz"
    report.save_runs([back], again)
    assert again.read_bytes() == (tmp_path / "runs.json.gz").read_bytes()  # no timestamp in the gzip

    run.turns[0].finished_s += 1.23e-7  # times are kept to the microsecond
    (back,) = report.load_runs(report.save_runs([run], tmp_path / "runs.json.gz"))
    assert back.turns[0].finished_s == 1.0


def test_many_kv_samples_are_thinned_keeping_peaks_and_ends():
    samples = [KVSample(i * 0.01, (i * 7919) % 500, (i * 104729) % 90, 0) for i in range(50_000)]
    samples[31_337].used_blocks = 999
    thin = report.thin_kv_samples(samples, buckets=100)
    assert len(thin) <= 4 * 100 + 1 and thin == sorted(thin, key=lambda k: k.time_s)
    assert thin[0] == samples[0] and thin[-1] == samples[-1]
    assert max(k.used_blocks for k in thin) == 999 and min(k.used_blocks for k in thin) == 0
    assert max(k.pinned_blocks for k in thin) == 89


def test_cli_report_writes_csvs_and_plots_again(tmp_path: Path, capsys):
    from tether import cli
    from tether.workloads.synth import synthesize
    trace = synthesize(3, seed=0, concurrency=2).save(tmp_path / "t.jsonl")
    out = tmp_path / "out"
    cli.main(["replay", str(trace), "--kv-blocks", "4096", "--token-scale", "0.05", "--policies",
              "baseline,tether", "--out", str(out)])
    derived = sorted(p.name for p in out.iterdir() if p.suffix in (".csv", ".png"))
    assert derived == ["jct_cdf.png", "kv_usage.png", "timeline_baseline.png", "timeline_tether.png",
                       "turns_baseline.csv", "turns_tether.csv"]
    before = {name: (out / name).read_bytes() for name in [*derived, "table.txt"]}
    for name in derived:
        (out / name).unlink()
    (out / "table.txt").unlink()
    capsys.readouterr()

    assert cli.main(["report", str(out)]) == 0
    assert "wrote 2 CSVs, 4 plots" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".csv", ".png")) == derived
    assert {name: (out / name).read_bytes() for name in before} == before  # the very same files
    assert all(before[name][:8] == PNG_MAGIC for name in derived if name.endswith(".png"))


def test_cli_report_names_a_missing_runs_file(tmp_path: Path, capsys):
    from tether import cli
    write_results(tmp_path, [run_for("vllm")])
    (tmp_path / "runs.json.gz").unlink()
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "runs.json.gz: missing" in capsys.readouterr().err
