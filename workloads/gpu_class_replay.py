"""Replay the published agent-serving settings on GPU-class *analytic* profiles (simulated-analytic).

    python -m tether.workloads.gpu_class_replay --out benchmarks/results/DATE-cpu/sim-analytic-gpu-class

Settings (``SETTINGS``), each with the four policy presets at 32 and 64 programs in flight:

- Continuum's: SWE-bench agent programs (``synth`` profile ``swe-bench``, after Continuum's
  mini-swe-agent traces) on Llama-3.1-8B (one A100-80GB, one H100) and Llama-3.1-70B (4 x H100);
- the independent reproduction's: 100 SWE-smith-like programs on Llama-3.1-8B, one H100. The SWE-smith
  trajectories themselves are not reachable from here, so these are synthesized with the longer
  ``coding-agent`` profile (median 860 appended tokens a turn), not the real rows; a SWE-smith file
  converted with ``tether trace convert`` replays the same way (``--trace``).

The KV pool is sized from GPU memory minus weights (``kv_pool_blocks``); the host tier of the presets
that use one gets as many blocks. Step times come from ``analytic_profile``: no GPU ran, so every
figure is simulated-analytic and labelled so in the table, results.json and README.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from tether.engine.policies import parse_policies
from tether.workloads.analytic_profile import analytic_profile, kv_pool_blocks
from tether.workloads.replay import run_policies
from tether.workloads.replay_common import ReplaySettings
from tether.workloads.synth import synthesize

LABEL = "simulated-analytic"
PRESETS = "baseline,baseline-offload,continuum-fixed,tether"
METRICS = [("jct_mean", "JCT mean (s)"), ("jct_p95", "JCT p95 (s)"), ("jct_p99", "JCT p99 (s)"),
           ("ttft_p99", "TTFT p99 (s)"), ("ttft_max", "TTFT max (s)"), ("preemptions", "preemptions")]


@dataclass(frozen=True)
class Setting:
    name: str
    model: str
    accelerator: str
    tp: int
    synth_profile: str
    programs: int = 100


SETTINGS = [
    Setting("continuum-8b-a100", "llama-3.1-8b", "A100", 1, "swe-bench"),
    Setting("continuum-8b-h100", "llama-3.1-8b", "H100", 1, "swe-bench"),
    Setting("continuum-70b-h100x4", "llama-3.1-70b", "H100", 4, "swe-bench"),
    Setting("reproduction-8b-h100", "llama-3.1-8b", "H100", 1, "coding-agent"),
]


def replay_setting(s: Setting, concurrency: int, out: Path, seed: int = 1, trace_path: str | None = None) -> dict:
    """Replay one setting at one concurrency under every preset; write its folder, return its summaries."""
    from tether.workloads.loaders import load_trajectories
    from tether.workloads.report import write_results

    trace = load_trajectories(trace_path, seed=seed) if trace_path else \
        synthesize(s.programs, seed=seed, profile=s.synth_profile)
    blocks = kv_pool_blocks(s.model, s.accelerator, tp=s.tp)
    profile = analytic_profile(s.model, s.accelerator, tp=s.tp)
    settings = ReplaySettings(kv_blocks=blocks, host_kv_blocks=blocks, concurrency=concurrency, seed=seed,
                              max_num_batched_tokens=8192, max_num_seqs=256)
    runs = run_policies(trace, parse_policies(PRESETS), settings, "sim", profile)
    folder = out / f"{s.name}-c{concurrency}"
    results = write_results(folder, runs, {"label": LABEL, "setting": s.__dict__, "profile_meta": profile.meta})
    return {"setting": s.name, "concurrency": concurrency, "kv_blocks": blocks, "folder": folder.name,
            "policies": {p: {k: v[k] for k, _ in METRICS} for p, v in results["policies"].items()}}


def markdown(rows: list[dict]) -> str:
    lines = [f"All figures {LABEL}: virtual clock, roofline step times (no GPU ran).", "",
             "| setting | programs in flight | KV blocks | metric | " + " | ".join(PRESETS.split(",")) + " |",
             "|---|---|---|---|" + "---|" * len(PRESETS.split(","))]
    for r in rows:
        for key, label in METRICS:
            vals = " | ".join(f"{r['policies'][p][key]:,.1f}" if key != "preemptions" else
                              f"{r['policies'][p][key]:,.0f}" for p in PRESETS.split(","))
            lines.append(f"| {r['setting']} | {r['concurrency']} | {r['kv_blocks']:,} | {label} | {vals} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    from tether.engine.cpu_tuning import cpu_model

    ap = argparse.ArgumentParser(prog="python -m tether.workloads.gpu_class_replay", description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--concurrency", default="32,64", help="comma-separated programs in flight")
    ap.add_argument("--settings", default=",".join(s.name for s in SETTINGS))
    ap.add_argument("--trace", help="replay this trajectory file or folder instead of synthesized programs")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    out = Path(args.out)
    wanted = args.settings.split(",")
    unknown = set(wanted) - {s.name for s in SETTINGS}
    if unknown:
        raise SystemExit(f"unknown settings {sorted(unknown)}; known: {[s.name for s in SETTINGS]}")
    rows = [replay_setting(s, int(c), out, args.seed, args.trace)
            for s in SETTINGS if s.name in wanted for c in args.concurrency.split(",")]
    table = markdown(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + f"\n\nReplayed on: {cpu_model()}\n")
    (out / "summary.json").write_text(json.dumps({"label": LABEL, "cpu": cpu_model(), "rows": rows}, indent=2))
    print(table + f"\n\ncpu: {cpu_model()}\nwrote {out / 'table.md'}")
    return rows


if __name__ == "__main__":
    main()
