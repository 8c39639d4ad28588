"""Side-by-side table of policies and the result files of a replay.

``format_table`` puts policies in columns and metrics in rows (units in the
row labels). ``write_results`` writes, into one directory:

- ``results.json``: ``{"meta": {...}, "policies": {name: summary}, "engine_stats":
  {name: stats}, "files": {...}, "plots": {...}}``; NaN (undefined) becomes null;
- ``turns_<policy>.csv``: one row per turn, every TurnRecord field plus
  ``ttft_s`` and ``tpot_s`` (empty when undefined);
- ``runs.json.gz``: the runs themselves (turns, arrivals, KV samples), compact;
- ``table.txt``: the ``format_table`` output;
- ``jct_cdf.png``, ``kv_usage.png``, ``timeline_<policy>.png``.

The CSVs and PNGs are derived: ``write_report`` (``tether report DIR``) writes them
again, with ``table.txt``, from ``results.json`` and ``runs.json.gz`` alone, so a results
folder keeps only those two (and the table) under version control.

Example:
    >>> res = write_results("out/", [run_fcfs, run_pin], {"trace": "swe.jsonl"})  # doctest: +SKIP
    >>> print(format_table(res["policies"]))                                    # doctest: +SKIP
    >>> write_report("out/")            # CSVs and PNGs again, e.g. in a fresh clone   # doctest: +SKIP
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import re
from dataclasses import asdict, astuple, fields
from pathlib import Path
from typing import Any

from . import plots
from .metrics import summarize, tpot, ttft
from .records import KVSample, ReplayRun, TurnRecord

RESULTS_FILE, RUNS_FILE, TABLE_FILE = "results.json", "runs.json.gz", "table.txt"
RUNS_VERSION = 1

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
    ("streamed_turns", "streamed turns", "int"),
    ("ttft_streamed_p50", "TTFT streamed, from start p50 (ms)", "ms"),
    ("ttft_streamed_p99", "TTFT streamed, from start p99 (ms)", "ms"),
    ("ttft_after_last_chunk_p50", "TTFT after last chunk p50 (ms)", "ms"),
    ("ttft_after_last_chunk_p99", "TTFT after last chunk p99 (ms)", "ms"),
    ("invalidated_tokens", "invalidated by replaces (tokens)", "int"),
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
    ("pins", "pins (count)", "int"),
    ("pin_hits", "pin hits (count)", "int"),
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
    """Write results.json, runs.json.gz, table.txt, per-policy CSVs and plots; return the results dict.

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
    # CSVs and plots from the runs as saved, so that write_report draws the very same files
    derived = _write_derived(out, load_runs(save_runs(runs, out / RUNS_FILE)), summaries)
    results = {
        "meta": _merge_meta(runs, meta or {}),
        "policies": summaries,
        "engine_stats": {r.policy: r.engine_stats for r in runs},
        "files": {"results": str(out / RESULTS_FILE), "runs": str(out / RUNS_FILE), "table": str(out / TABLE_FILE),
                  "turns_csv": derived["turns_csv"]},
        "plots": derived["plots"],
    }
    (out / RESULTS_FILE).write_text(json.dumps(_json_safe(results), indent=2) + "\n")
    return results


def write_report(results_dir: str | Path) -> dict:
    """Write table.txt, the per-policy CSVs and the plots of a results folder again, from its
    ``results.json`` (the summaries) and ``runs.json.gz`` (the runs); return
    ``{"turns_csv": {policy: path}, "plots": {...}}``.

    Runs without KV samples (converted from the CSVs of a folder older than runs.json.gz)
    get no ``kv_usage.png``. Raises FileNotFoundError naming a missing file.

    >>> write_report("benchmarks/results/2026-11-26-cpu/sim-synth200-baseline")  # doctest: +SKIP
    """
    out = Path(results_dir)
    for name in (RESULTS_FILE, RUNS_FILE):
        if not (out / name).is_file():
            raise FileNotFoundError(f"{out / name}: missing (a results folder has {RESULTS_FILE} and {RUNS_FILE}, "
                                    "as write_results / tether replay --out write them)")
    results = json.loads((out / RESULTS_FILE).read_text())
    runs = load_runs(out / RUNS_FILE)
    if [r.policy for r in runs] != list(results["policies"]):
        raise ValueError(f"{out}: {RUNS_FILE} holds policies {[r.policy for r in runs]}, "
                         f"{RESULTS_FILE} {list(results['policies'])}")
    return _write_derived(out, runs, results["policies"])


def _write_derived(out: Path, runs: list[ReplayRun], summaries: dict[str, dict]) -> dict:
    """table.txt, turns_<policy>.csv and the PNGs of ``runs`` in ``out``."""
    slugs = [_slug(r.policy) for r in runs]
    csvs = {r.policy: str(write_turns_csv(r, out / f"turns_{s}.csv")) for r, s in zip(runs, slugs)}
    (out / TABLE_FILE).write_text(format_table(summaries) + "\n")
    plot_paths: dict[str, Any] = {"jct_cdf": str(plots.plot_jct_cdf(runs, out / "jct_cdf.png"))}
    if any(r.kv_samples for r in runs):  # else nothing to draw (runs converted from CSVs have none)
        plot_paths["kv_usage"] = str(plots.plot_kv_usage(runs, out / "kv_usage.png"))
    plot_paths["timeline"] = {r.policy: str(plots.plot_timeline(r, out / f"timeline_{s}.png"))
                              for r, s in zip(runs, slugs)}
    return {"turns_csv": csvs, "plots": plot_paths}


# ---- the runs file -------------------------------------------------------------------
# {"version": 1, "runs": [{"policy", "mode", "kv_total_blocks", "wall_s", "program_arrivals": {pid: s},
#   "turns": {TurnRecord field: [one value per turn]}, "kv_samples": {KVSample field: [...]}}]}
# gzip-compressed with no timestamp, so the same runs give the same bytes. Times are kept to the
# microsecond.
#
# Every turn is kept. KV samples are only drawn (the summaries in results.json were computed from
# all of them): a replay takes one per engine step, tens of thousands, so they are thinned to what
# a plot can show. A sample equal to the one before is left out (it changes no step line); past
# KV_PLOT_BUCKETS * 4 samples, each of KV_PLOT_BUCKETS equal time slices keeps its first sample
# and those with the most and fewest used blocks and the most pinned ones, so peaks and dips stay
# where they were. write_results draws its CSVs and plots from these saved runs too.

KV_PLOT_BUCKETS = 1000
TIME_DECIMALS = 6


def save_runs(runs: list[ReplayRun], path: str | Path) -> Path:
    """The runs' turns, arrivals and (thinned) KV samples, as ``load_runs`` reads them back."""
    path = Path(path)
    data = {"version": RUNS_VERSION, "runs": [{
        "policy": r.policy, "mode": r.mode, "kv_total_blocks": r.kv_total_blocks, "wall_s": r.wall_s,
        "program_arrivals": {pid: round(t, TIME_DECIMALS) for pid, t in r.program_arrivals.items()},
        "turns": _columns(r.turns, TurnRecord), "kv_samples": _columns(thin_kv_samples(r.kv_samples), KVSample),
    } for r in runs]}
    raw = json.dumps(_json_safe(data), separators=(",", ":")).encode()
    path.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    return path


def load_runs(path: str | Path) -> list[ReplayRun]:
    """The runs ``save_runs`` wrote (their meta and engine stats are in results.json)."""
    data = json.loads(gzip.decompress(Path(path).read_bytes()))
    if data.get("version") != RUNS_VERSION:
        raise ValueError(f"{path}: runs file version {data.get('version')!r}; this tether reads {RUNS_VERSION}")
    return [ReplayRun(r["policy"], r["mode"], turns=_rows(r["turns"], TurnRecord),
                      program_arrivals=r["program_arrivals"], kv_samples=_rows(r["kv_samples"], KVSample),
                      kv_total_blocks=r["kv_total_blocks"], wall_s=r["wall_s"]) for r in data["runs"]]


def thin_kv_samples(samples: list[KVSample], buckets: int = KV_PLOT_BUCKETS) -> list[KVSample]:
    """``samples`` (in time order) without repeats and, when many, thinned per time slice (see above)."""
    kept = [s for i, s in enumerate(samples)
            if i in (0, len(samples) - 1) or astuple(s)[1:] != astuple(samples[i - 1])[1:]]
    if len(kept) <= 4 * buckets:
        return kept
    t0, t1 = kept[0].time_s, kept[-1].time_s
    width = (t1 - t0) / buckets or 1.0
    slices: dict[int, list[int]] = {}
    for i, s in enumerate(kept):
        slices.setdefault(min(int((s.time_s - t0) / width), buckets - 1), []).append(i)
    keep = {len(kept) - 1}
    for idx in slices.values():
        keep.add(idx[0])
        keep.add(max(idx, key=lambda i: kept[i].used_blocks))
        keep.add(min(idx, key=lambda i: kept[i].used_blocks))
        keep.add(max(idx, key=lambda i: kept[i].pinned_blocks))
    return [kept[i] for i in sorted(keep)]


def _columns(items: list, cls: type) -> dict[str, list]:
    """Field -> values; float fields (times, durations) rounded to TIME_DECIMALS."""
    return {f.name: [_round(getattr(x, f.name)) for x in items] for f in fields(cls)}


def _round(v: Any) -> Any:
    return round(v, TIME_DECIMALS) if isinstance(v, float) and math.isfinite(v) else v


def _rows(columns: dict[str, list], cls: type) -> list:
    names = list(columns)
    return [cls(**dict(zip(names, values))) for values in zip(*columns.values())]
