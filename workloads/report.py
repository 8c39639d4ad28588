"""Side-by-side table of policies and the result files of a replay.

``format_table`` puts policies in columns and metrics in rows (units in the
row labels). ``write_results`` writes, into one directory:

- ``results.json``: ``{"meta": {...}, "policies": {name: summary}, "engine_stats":
  {name: stats}, "files": {...}, "plots": {...}}``; NaN (undefined) becomes null;
- ``turns_<policy>.csv``: one row per turn, every TurnRecord field plus
  ``ttft_s`` and ``tpot_s`` (empty when undefined);
- ``table.txt``: the ``format_table`` output;
- ``jct_cdf.png``, ``kv_usage.png``, ``timeline_<policy>.png``.

Example:
    >>> res = write_results("out/", [run_fcfs, run_pin], {"trace": "swe.jsonl"})  # doctest: +SKIP
    >>> print(format_table(res["policies"]))                                    # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from . import plots
from .metrics import summarize, tpot, ttft
from .records import ReplayRun, TurnRecord

# (summary key, row label with unit, display kind). Kinds: "s" seconds, "ms"
# seconds shown as milliseconds, "int" counts, "pct" ratio shown as percent,
# "rate" per-second throughput, "blocks" possibly fractional block count.
ROWS: list[tuple[str, str, str]] = [
    ("programs", "programs", "int"),
    ("turns", "turns", "int"),
    ("jct_mean", "JCT mean (s)", "s"),
    ("jct_p50", "JCT p50 (s)", "s"),
    ("jct_p90", "JCT p90 (s)", "s"),
    ("jct_p95", "JCT p95 (s)", "s"),
    ("jct_p99", "JCT p99 (s)", "s"),
    ("jct_max", "JCT max (s)", "s"),
    ("ttft_mean", "TTFT mean (ms)", "ms"),
    ("ttft_p50", "TTFT p50 (ms)", "ms"),
    ("ttft_p99", "TTFT p99 (ms)", "ms"),
    ("ttft_max", "TTFT max (ms)", "ms"),
    ("tpot_mean", "TPOT mean (ms/token)", "ms"),
    ("tpot_p50", "TPOT p50 (ms/token)", "ms"),
    ("tpot_p99", "TPOT p99 (ms/token)", "ms"),
    ("jobs_per_s", "throughput (programs/s)", "rate"),
    ("tokens_per_s", "throughput (output tokens/s)", "rate"),
    ("makespan_s", "makespan (s)", "s"),
    ("output_tokens", "output (tokens)", "int"),
    ("prompt_tokens", "prompt (tokens)", "int"),
    ("cached_tokens", "prefix-hit (tokens)", "int"),
    ("prefix_hit_rate", "prefix hit rate (%)", "pct"),
    ("preemptions", "preemptions (count)", "int"),
    ("recomputed_tokens", "recomputed (tokens)", "int"),
    ("kv_peak_blocks", "KV used peak (blocks)", "int"),
    ("kv_mean_blocks", "KV used mean, time-wtd (blocks)", "blocks"),
    ("kv_peak_pinned_blocks", "KV pinned peak (blocks)", "int"),
    ("kv_peak_host_blocks", "KV host tier peak (blocks)", "int"),
    ("kv_total_blocks", "KV pool (blocks)", "int"),
]

# Keys every policy entry of results.json is guaranteed to carry.
REQUIRED_KEYS = ("jct_mean", "jct_p50", "jct_p95", "jct_p99", "ttft_p50", "ttft_p99",
                 "tpot_p50", "prefix_hit_rate", "preemptions", "kv_peak_blocks")


def _fmt(value: Any, kind: str) -> str:
    """One cell; '-' for missing or undefined (NaN) values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    v = float(value)
    if kind == "int":
        return f"{v:,.0f}"
    if kind == "ms":
        return f"{v * 1000:,.1f}"
    if kind == "pct":
        return f"{v * 100:.1f}"
    if kind == "rate":
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    if kind == "blocks":
        return f"{v:,.1f}"
    return f"{v:,.2f}"  # seconds


def format_table(summaries: dict[str, dict]) -> str:
    """Fixed-width text table: one column per policy, one row per metric.

    Known metrics come first in a fixed order with units; any other keys
    follow with their raw names. Every line has the same width.

    >>> print(format_table({"fcfs": {"jct_mean": 12.5}, "pin": {"jct_mean": 9.25}}))
    metric         fcfs   pin
    ------------  -----  ----
    JCT mean (s)  12.50  9.25
    """
    if not summaries:
        raise ValueError("format_table needs at least one policy summary")
    present = set().union(*(s.keys() for s in summaries.values()))
    rows = [(k, label, kind) for k, label, kind in ROWS if k in present]
    known = {k for k, _, _ in ROWS}
    rows += [(k, k, "float") for k in sorted(present - known)]

    names = list(summaries)
    cells = [[_fmt(summaries[n].get(k), kind) for n in names] for k, _, kind in rows]
    label_w = max([len("metric")] + [len(label) for _, label, _ in rows])
    col_w = [max([len(n)] + [len(r[j]) for r in cells]) for j, n in enumerate(names)]

    def line(label: str, vals: list[str]) -> str:
        # Labels left, numbers right-aligned so digits line up.
        return "  ".join([label.ljust(label_w)] + [v.rjust(w) for v, w in zip(vals, col_w)])

    out = [line("metric", names), line("-" * label_w, ["-" * w for w in col_w])]
    out += [line(label, vals) for (_, label, _), vals in zip(rows, cells)]
    return "\n".join(out)


def _json_safe(x: Any) -> Any:
    """NaN/inf -> None (strict JSON has no NaN); other odd objects -> str."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if x is None or isinstance(x, (str, int, bool)):
        return x
    return str(x)


def _slug(name: str) -> str:
    """A policy name made safe as part of a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "policy"


def write_turns_csv(run: ReplayRun, path: str | Path) -> Path:
    """One row per turn (ordered by submit time): TurnRecord fields, then ttft_s, tpot_s."""
    path = Path(path)
    cols = [f.name for f in fields(TurnRecord)] + ["ttft_s", "tpot_s"]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for t in sorted(run.turns, key=lambda t: (t.submitted_s, t.program_id, t.turn)):
            tp = tpot(t)
            w.writerow({**asdict(t), "ttft_s": ttft(t), "tpot_s": "" if tp is None else tp})
    return path


def _merge_meta(runs: list[ReplayRun], extra: dict) -> dict:
    """Run meta shared by all runs (a replay's settings, trace meta and profile), then ``extra``,
    then mode and policies.

    Run meta that differs between runs is kept per policy instead of being
    silently overwritten by the last run.
    """
    keys = set().union(*(r.meta.keys() for r in runs))
    common, per_policy = {}, {r.policy: {} for r in runs}
    for k in sorted(keys):
        vals = [r.meta.get(k) for r in runs]
        if all(k in r.meta for r in runs) and all(v == vals[0] for v in vals):
            common[k] = vals[0]
        else:
            for r in runs:
                if k in r.meta:
                    per_policy[r.policy][k] = r.meta[k]
    modes = sorted({r.mode for r in runs})
    meta = {**common, **extra,
            "mode": modes[0] if len(modes) == 1 else modes,
            "policies": [r.policy for r in runs],
            "replay_wall_s": {r.policy: r.wall_s for r in runs}}
    if any(per_policy.values()):
        meta["per_policy_meta"] = {p: m for p, m in per_policy.items() if m}
    return meta


def write_results(out_dir: str | Path, runs: list[ReplayRun], meta: dict | None = None) -> dict:
    """Write results.json, table.txt, per-policy CSVs and plots; return the results dict.

    ``results["meta"]`` is the runs' meta (``run_policies`` stores settings, trace meta and
    profile there) plus ``meta``.

    >>> res = write_results("/tmp/out", [run_fcfs, run_pin], {"trace": "t.jsonl"})  # doctest: +SKIP
    >>> res["policies"]["fcfs"]["jct_p95"], res["plots"]["jct_cdf"]                 # doctest: +SKIP
    (41.2, '/tmp/out/jct_cdf.png')
    """
    if not runs:
        raise ValueError("write_results needs at least one run")
    names = [r.policy for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"policy names must be unique, got {names}")
    slugs = [_slug(n) for n in names]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"policy names collide as file names: {names}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    summaries = {r.policy: summarize(r) for r in runs}  # raises before any file is written
    csvs = {r.policy: str(write_turns_csv(r, out / f"turns_{s}.csv")) for r, s in zip(runs, slugs)}
    table = format_table(summaries)
    (out / "table.txt").write_text(table + "\n")
    plot_paths = {
        "jct_cdf": str(plots.plot_jct_cdf(runs, out / "jct_cdf.png")),
        "kv_usage": str(plots.plot_kv_usage(runs, out / "kv_usage.png")),
        "timeline": {r.policy: str(plots.plot_timeline(r, out / f"timeline_{s}.png"))
                     for r, s in zip(runs, slugs)},
    }
    results = {
        "meta": _merge_meta(runs, meta or {}),
        "policies": summaries,
        "engine_stats": {r.policy: r.engine_stats for r in runs},
        "files": {"results": str(out / "results.json"), "table": str(out / "table.txt"), "turns_csv": csvs},
        "plots": plot_paths,
    }
    (out / "results.json").write_text(json.dumps(_json_safe(results), indent=2) + "\n")
    return results
