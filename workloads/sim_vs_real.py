"""Does the simulator predict reality? The same trace replayed in both modes, and the error of sim against real.

    tether replay trace.jsonl --mode both --policies baseline,tether --kv-blocks 80 --profile here.json --out out/

writes ``out/real/`` and ``out/sim/`` (each a normal replay folder), and ``out/sim_vs_real.json``,
``out/sim_vs_real.md`` and ``out/sim_vs_real.png``: per policy, the relative error of sim against real
for mean and p99 JCT and TTFT; and the error of each policy's ratio to the first policy (the speed-up the
papers report: ``ratio = first policy's mean JCT / this policy's``).
"""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

METRICS = [("jct_mean", "JCT mean"), ("jct_p99", "JCT p99"), ("ttft_mean", "TTFT mean"), ("ttft_p99", "TTFT p99")]


def compare(real: dict[str, dict], sim: dict[str, dict]) -> dict:
    """Errors of ``sim`` against ``real`` (each: policy -> summary, as in results.json's ``policies``).

        >>> compare({"a": {"jct_mean": 10.0}, "b": {"jct_mean": 5.0}},
        ...         {"a": {"jct_mean": 9.0}, "b": {"jct_mean": 5.0}})["ratios"]["b"]["error"]
        -0.1
    """
    if list(real) != list(sim):
        raise ValueError(f"real and sim replayed different policies: {list(real)} vs {list(sim)}")
    per_policy = {}
    for policy in real:
        per_policy[policy] = {key: {"real": real[policy].get(key), "sim": sim[policy].get(key),
                                    "error": _err(sim[policy].get(key), real[policy].get(key))}
                              for key, _ in METRICS if key in real[policy]}
    first = next(iter(real))
    ratios = {}
    for policy in list(real)[1:]:
        r = real[first]["jct_mean"] / real[policy]["jct_mean"]
        s = sim[first]["jct_mean"] / sim[policy]["jct_mean"]
        ratios[policy] = {"vs": first, "real": r, "sim": s, "error": _err(s, r)}
    return {"per_policy": per_policy, "ratios": ratios}


ENGINE = [("step_busy_s", "engine busy (s)"), ("steps", "steps"), ("computed_tokens", "computed tokens"),
          ("preemptions", "preemptions")]


def engine_breakdown(real: dict[str, dict], sim: dict[str, dict]) -> dict:
    """Per policy, the engines' own counters in both modes (``engine_stats`` of results.json): what
    splits a JCT error into the step-time model (busy time for the same steps and tokens) and the
    rest (scheduling that diverged: other steps, preemptions; time outside steps).

        >>> engine_breakdown({"a": {"steps": 10}}, {"a": {"steps": 11}})["a"]["steps"]["error"]
        0.1
    """
    return {policy: {key: {"real": real[policy].get(key), "sim": sim.get(policy, {}).get(key),
                           "error": _err(sim.get(policy, {}).get(key), real[policy].get(key))}
                     for key, _ in ENGINE if key in real[policy]}
            for policy in real}


def _err(sim: float | None, real: float | None) -> float | None:
    if sim is None or real is None or real == 0:
        return None
    return round(sim / real - 1, 6)


def markdown(cmp: dict, title: str = "") -> str:
    """The comparison as a markdown table (errors in percent, sim relative to real)."""
    pct = lambda e: "-" if e is None else f"{100 * e:+.1f}%"  # noqa: E731
    lines = [title, ""] if title else []
    lines += ["| policy | metric | real (s) | sim (s) | sim error |", "|---|---|---|---|---|"]
    for policy, metrics in cmp["per_policy"].items():
        for key, label in METRICS:
            if key in metrics:
                m = metrics[key]
                lines.append(f"| {policy} | {label} | {m['real']:.2f} | {m['sim']:.2f} | {pct(m['error'])} |")
    if cmp["ratios"]:
        lines += ["", "| policy | mean-JCT ratio vs | real | sim | ratio error |", "|---|---|---|---|---|"]
        for policy, r in cmp["ratios"].items():
            lines.append(f"| {policy} | {r['vs']} | {r['real']:.3f}x | {r['sim']:.3f}x | {pct(r['error'])} |")
    if cmp.get("engine"):
        lines += ["", "| policy | engine counter | real | sim | sim error |", "|---|---|---|---|---|"]
        for policy, counters in cmp["engine"].items():
            for key, label in ENGINE:
                if key in counters and counters[key]["sim"] is not None:
                    c = counters[key]
                    lines.append(f"| {policy} | {label} | {c['real']:,.1f} | {c['sim']:,.1f} | {pct(c['error'])} |")
    return "\n".join(lines)


def plot(cmp: dict, path: str | Path) -> Path:
    """Bars of real vs sim per policy and metric."""
    policies = list(cmp["per_policy"])
    fig = Figure(figsize=(3.2 * len(METRICS), 3.4), dpi=110)
    FigureCanvasAgg(fig)
    for i, (key, label) in enumerate(METRICS):
        ax = fig.add_subplot(1, len(METRICS), i + 1)
        xs = range(len(policies))
        real = [cmp["per_policy"][p].get(key, {}).get("real") or 0 for p in policies]
        sim = [cmp["per_policy"][p].get(key, {}).get("sim") or 0 for p in policies]
        ax.bar([x - 0.2 for x in xs], real, 0.4, label="real", color="#1f5fa8")
        ax.bar([x + 0.2 for x in xs], sim, 0.4, label="sim", color="#f28e2b")
        ax.set_xticks(list(xs), policies, rotation=20, fontsize=8)
        ax.set_title(f"{label} (s)", fontsize=9)
        if i == 0:
            ax.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def write_comparison(out: str | Path, real: dict, sim: dict, meta: dict | None = None) -> dict:
    """Compare two results dicts (``write_results``'s), write sim_vs_real.{json,md,png} into ``out``."""
    out = Path(out)
    cmp = compare(real["policies"], sim["policies"])
    if real.get("engine_stats") and sim.get("engine_stats"):
        cmp["engine"] = engine_breakdown(real["engine_stats"], sim["engine_stats"])
    cmp["meta"] = {**(meta or {}), "cpu": real["meta"].get("cpu"), "profile": sim["meta"].get("profile"),
                   "settings": real["meta"].get("settings")}
    (out / "sim_vs_real.json").write_text(json.dumps(cmp, indent=2))
    (out / "sim_vs_real.md").write_text(markdown(cmp) + "\n")
    plot(cmp, out / "sim_vs_real.png")
    return cmp
