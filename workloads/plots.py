"""PNG plots of replay runs: JCT CDF, KV usage over time, per-program timeline.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so nothing
needs a display and no global backend state is touched.

Example:
    >>> plot_jct_cdf(runs, "out/jct_cdf.png")              # doctest: +SKIP
    >>> plot_kv_usage(runs, "out/kv_usage.png")            # doctest: +SKIP
    >>> plot_timeline(runs[0], "out/timeline_fcfs.png")    # doctest: +SKIP
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .metrics import job_completion_times, mean
from .records import ReplayRun, TurnRecord

# One colour per policy, stable across all plots of one result set.
_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
_QUEUE, _LLM, _TOOL = "#a6c8ea", "#1f5fa8", "#f28e2b"


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)  # bind the Agg canvas: savefig then never looks for a GUI backend
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def plot_jct_cdf(runs: list[ReplayRun], path: str | Path) -> Path:
    """Empirical CDF of job completion time, one step line per policy.

    >>> plot_jct_cdf([run_a, run_b], "jct_cdf.png")        # doctest: +SKIP
    """
    if not runs:
        raise ValueError("plot_jct_cdf needs at least one run")
    fig = _new_figure(7, 4.5)
    ax = fig.add_subplot()
    for i, run in enumerate(runs):
        jcts = sorted(job_completion_times(run).values())
        n = len(jcts)
        # Start at (0, 0) so every curve visibly rises from the origin.
        xs, ys = [0.0, *jcts], [0.0, *((k + 1) / n for k in range(n))]
        ax.step(xs, ys, where="post", color=_PALETTE[i % len(_PALETTE)], linewidth=1.8,
                label=f"{run.policy} (mean {mean(jcts):.1f} s, n={n})")
    ax.set_title("Job completion time (CDF over programs)")
    ax.set_xlabel("JCT: last finish - arrival (s)")
    ax.set_ylabel("fraction of programs")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_kv_usage(runs: list[ReplayRun], path: str | Path) -> Path:
    """Used and pinned KV blocks over time, one panel per policy, pool size dashed.

    Drawn as steps (a value holds until the next sample), the same reading
    as ``metrics.time_weighted_mean``.

    >>> plot_kv_usage([run_a, run_b], "kv_usage.png")      # doctest: +SKIP
    """
    if not runs:
        raise ValueError("plot_kv_usage needs at least one run")
    fig = _new_figure(8, 1.0 + 2.2 * len(runs))
    axes = fig.subplots(len(runs), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    # Panels share y; headroom above the highest pool/peak keeps the legend off the data.
    top = max([r.kv_total_blocks for r in runs] + [s.used_blocks for r in runs for s in r.kv_samples] + [1])
    for i, (ax, run) in enumerate(zip(axes, runs)):
        color = _PALETTE[i % len(_PALETTE)]
        ss = sorted(run.kv_samples, key=lambda s: s.time_s)
        if ss:
            t = [s.time_s for s in ss]
            ax.step(t, [s.used_blocks for s in ss], where="post", color=color, label="used")
            ax.fill_between(t, [s.pinned_blocks for s in ss], step="post", color=color,
                            alpha=0.35, linewidth=0, label="pinned")
        else:
            ax.text(0.5, 0.5, "no KV samples", transform=ax.transAxes, ha="center", va="center")
        if run.kv_total_blocks:
            ax.axhline(run.kv_total_blocks, color="black", linestyle="--", linewidth=1,
                       label=f"pool ({run.kv_total_blocks} blocks)")
        ax.set_title(run.policy, loc="left", fontsize=10)
        ax.set_ylabel("KV blocks")
        ax.set_ylim(0, top * 1.3)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", ncol=3, fontsize=8)
    axes[-1].set_xlabel("time (s)")
    fig.suptitle("KV cache usage over time")
    return _save(fig, path)


def plot_timeline(run: ReplayRun, path: str | Path, max_programs: int = 40) -> Path:
    """Gantt view: one lane per program (earliest arrivals first, at most ``max_programs``).

    Each turn: queue wait and prefill (submitted -> first token) light blue,
    then decoding (first token -> finished) dark blue, then its tool phase
    (finished -> finished + tool_duration_s) orange. A tick marks arrival.

    >>> plot_timeline(run, "timeline_fcfs.png", max_programs=20)   # doctest: +SKIP
    """
    if not run.turns:
        raise ValueError(f"run {run.policy!r} has no turns to plot")
    by_prog: dict[str, list[TurnRecord]] = defaultdict(list)
    for t in run.turns:
        by_prog[t.program_id].append(t)
    arrival = {p: run.program_arrivals.get(p, min(t.submitted_s for t in ts)) for p, ts in by_prog.items()}
    order = sorted(by_prog, key=lambda p: (arrival[p], p))
    shown = order[:max_programs]

    fig = _new_figure(10, 1.6 + 0.22 * len(shown))
    ax = fig.add_subplot()
    for lane, pid in enumerate(shown):
        queue, llm, tool = [], [], []
        for t in by_prog[pid]:
            queue.append((t.submitted_s, t.first_token_s - t.submitted_s))
            llm.append((t.first_token_s, t.finished_s - t.first_token_s))
            if t.tool_duration_s > 0:
                tool.append((t.finished_s, t.tool_duration_s))
        y = (lane - 0.38, 0.76)
        ax.broken_barh(queue, y, facecolors=_QUEUE)
        ax.broken_barh(llm, y, facecolors=_LLM)
        ax.broken_barh(tool, y, facecolors=_TOOL)
        ax.plot([arrival[pid]], [lane], marker="|", color="black", markersize=8)
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels(shown, fontsize=7 if len(shown) > 20 else 9)
    ax.set_ylim(len(shown) - 0.5, -0.5)  # earliest arrival on top
    ax.set_xlabel("time (s)")
    ax.set_ylabel("program")
    note = f"first {len(shown)} of {len(order)} programs" if len(shown) < len(order) else f"{len(order)} programs"
    ax.set_title(f"Timeline: {run.policy} ({note}, by arrival)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(handles=[Patch(color=_QUEUE, label="queued + prefill (submitted -> 1st token)"),
                       Patch(color=_LLM, label="decoding (1st token -> finished)"),
                       Patch(color=_TOOL, label="tool running")],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # outside: never hides bars
    return _save(fig, path)
