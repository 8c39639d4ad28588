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
