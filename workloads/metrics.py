"""Metrics of one replay: job completion time, TTFT, TPOT, throughput, cache and KV use.

Definitions (all times in seconds, taken from the ``ReplayRun`` alone):

- JCT of a program = its last turn's ``finished_s`` minus its arrival in
  ``run.program_arrivals`` (Continuum: last departure - first arrival).
- TTFT of a turn = ``first_token_s - submitted_s`` (includes queue wait; a streamed
  turn's counts from its start, its chunks' arrival included).
- TTFT after last chunk of a streamed turn = ``first_token_s - last_chunk_s`` (Stream2LLM's
  metric: what is left once the context is whole). Runs with streamed turns also report
  ``streamed_turns``, ``ttft_streamed_p50/p99`` (from the turn's start, streamed turns only),
  ``ttft_after_last_chunk_p50/p99`` and ``invalidated_tokens`` (computed tokens replaces
  rolled back); runs without carry none of these keys.
- TPOT of a turn = ``(finished_s - first_token_s) / (output_tokens - 1)``, only
  for turns with more than one output token.
- Percentiles use linear interpolation between closest ranks, the same as
  ``numpy.percentile(..., method="linear")`` (numpy's default): the q-th
  percentile of sorted ``x[0..n-1]`` sits at rank ``q/100 * (n-1)``.
- Throughput is over the makespan: last finish minus first arrival.
- ``kv_mean_blocks`` is time-weighted: each sample's value holds until the next
  sample (a step function), so bursts of samples do not skew the mean.

Values that a run cannot define (TPOT with no multi-token turn, KV metrics
without samples, ``recomputed_tokens`` the engine did not report) are NaN,
never a made-up 0. A run with no turns, or a program with no arrival, raises
``ValueError``.

Example:
    >>> from tether.workloads.records import ReplayRun, TurnRecord
    >>> run = ReplayRun("fcfs", "sim", program_arrivals={"p": 0.0},
    ...     turns=[TurnRecord("p", 0, 0.0, 0.5, 1.5, 100, 40, 11)])
    >>> s = summarize(run)
    >>> s["jct_mean"], s["ttft_p50"], round(s["tpot_p50"], 3), s["prefix_hit_rate"]
    (1.5, 0.5, 0.1, 0.4)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from .records import KVSample, ReplayRun, TurnRecord

NAN = float("nan")


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation, as numpy's default.

    >>> percentile([1, 2, 3, 4], 50)
    2.5
    >>> percentile([2, 4, 5], 90)
    4.8
    """
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of an empty sequence is undefined")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    rank = q / 100.0 * (len(xs) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; ValueError when empty.

    >>> mean([1.0, 2.0, 6.0])
    3.0
    """
    if not values:
        raise ValueError("mean of an empty sequence is undefined")
    return sum(values) / len(values)


def job_completion_times(run: ReplayRun) -> dict[str, float]:
    """JCT per program: last turn's finish minus the program's arrival.

    >>> run = ReplayRun("p", "sim", program_arrivals={"a": 1.0},
    ...     turns=[TurnRecord("a", 0, 1.0, 1.2, 2.0, 10, 0, 4),
    ...            TurnRecord("a", 1, 3.0, 3.1, 4.5, 20, 10, 4)])
    >>> job_completion_times(run)
    {'a': 3.5}
    """
    if not run.turns:
        raise ValueError(f"run {run.policy!r} has no turns: nothing to measure")
    last: dict[str, TurnRecord] = {}
    for t in run.turns:
        # "Last" by turn index; ties (should not happen) go to the later finish.
        cur = last.get(t.program_id)
        if cur is None or (t.turn, t.finished_s) > (cur.turn, cur.finished_s):
            last[t.program_id] = t
    missing = sorted(set(last) - set(run.program_arrivals))
    if missing:
        raise ValueError(f"run {run.policy!r}: programs without an arrival time: {missing[:5]}")
    unfinished = sorted(set(run.program_arrivals) - set(last))
    if unfinished:
        # A program that arrived but never ran would silently vanish from JCT stats.
        raise ValueError(f"run {run.policy!r}: programs arrived but have no turns: {unfinished[:5]}")
    return {pid: t.finished_s - run.program_arrivals[pid] for pid, t in last.items()}


def ttft(turn: TurnRecord) -> float:
    """Time to first token of one turn, queue wait included."""
    return turn.first_token_s - turn.submitted_s


def ttft_after_last_chunk(turn: TurnRecord) -> float | None:
    """A streamed turn's first token minus its last chunk's arrival; None when not streamed."""
    return None if turn.last_chunk_s is None else turn.first_token_s - turn.last_chunk_s


def tpot(turn: TurnRecord) -> float | None:
    """Time per output token after the first; None for single-token turns."""
    if turn.output_tokens <= 1:
        return None
    return (turn.finished_s - turn.first_token_s) / (turn.output_tokens - 1)


def time_weighted_mean(samples: Sequence[KVSample], attr: str = "used_blocks") -> float:
    """Mean of a sampled step function: each value holds until the next sample.

    The last sample only closes the interval. If all samples share one time,
    there is no duration to weight by, so the plain mean is returned.

    >>> s = [KVSample(0, 10, 0, 0), KVSample(2, 30, 0, 0), KVSample(3, 0, 0, 0)]
    >>> round(time_weighted_mean(s), 3)
    16.667
    """
    if not samples:
        raise ValueError("time-weighted mean of no KV samples is undefined")
    ss = sorted(samples, key=lambda s: s.time_s)
    span = ss[-1].time_s - ss[0].time_s
    if span <= 0:
        return mean([getattr(s, attr) for s in ss])
    area = sum(getattr(a, attr) * (b.time_s - a.time_s) for a, b in zip(ss, ss[1:]))
    return area / span


def summarize(run: ReplayRun) -> dict[str, float]:
    """All headline metrics of one run as a flat dict of floats (see module docstring)."""
    jcts = list(job_completion_times(run).values())  # also validates turns/arrivals
    turns = run.turns
    ttfts = [ttft(t) for t in turns]
    tpots = [v for v in (tpot(t) for t in turns) if v is not None]

    first_arrival = min(run.program_arrivals[t.program_id] for t in turns)
    last_finish = max(t.finished_s for t in turns)
    makespan = last_finish - first_arrival
    out_tokens = sum(t.output_tokens for t in turns)
    prompt_tokens = sum(t.prompt_tokens for t in turns)
    cached_tokens = sum(t.cached_tokens for t in turns)

    stats = run.engine_stats or {}
    preemptions = stats.get("preemptions")
    if preemptions is None:
        preemptions = sum(t.preemptions for t in turns)
    recomputed = stats.get("recomputed_tokens")

    s: dict[str, float] = {
        "programs": float(len(jcts)),
        "turns": float(len(turns)),
        "jct_mean": mean(jcts),
        "jct_p50": percentile(jcts, 50),
        "jct_p90": percentile(jcts, 90),
        "jct_p95": percentile(jcts, 95),
        "jct_p99": percentile(jcts, 99),
        "jct_max": max(jcts),
        "ttft_mean": mean(ttfts),
        "ttft_p50": percentile(ttfts, 50),
        "ttft_p99": percentile(ttfts, 99),
        # The max matters: pinning can starve a few requests for minutes.
        "ttft_max": max(ttfts),
        "tpot_mean": mean(tpots) if tpots else NAN,
        "tpot_p50": percentile(tpots, 50) if tpots else NAN,
        "tpot_p99": percentile(tpots, 99) if tpots else NAN,
        "makespan_s": makespan,
        "jobs_per_s": len(jcts) / makespan if makespan > 0 else NAN,
        "tokens_per_s": out_tokens / makespan if makespan > 0 else NAN,
        "output_tokens": float(out_tokens),
        "prompt_tokens": float(prompt_tokens),
        "cached_tokens": float(cached_tokens),
        "prefix_hit_rate": cached_tokens / prompt_tokens if prompt_tokens > 0 else NAN,
        "preemptions": float(preemptions),
        "recomputed_tokens": float(recomputed) if recomputed is not None else NAN,
        "pins": float(stats["pins"]) if "pins" in stats else NAN,
        "pin_hits": float(stats["pin_hits"]) if "pin_hits" in stats else NAN,
        "kv_total_blocks": float(run.kv_total_blocks),
    }
    if run.kv_samples:
        s["kv_peak_blocks"] = float(max(k.used_blocks for k in run.kv_samples))
        s["kv_mean_blocks"] = time_weighted_mean(run.kv_samples, "used_blocks")
        s["kv_peak_pinned_blocks"] = float(max(k.pinned_blocks for k in run.kv_samples))
        s["kv_peak_host_blocks"] = float(max(k.host_blocks for k in run.kv_samples))
    else:
        s["kv_peak_blocks"] = s["kv_mean_blocks"] = s["kv_peak_pinned_blocks"] = s["kv_peak_host_blocks"] = NAN
    s.update(_streamed(turns))
    return s


def _streamed(turns: list[TurnRecord]) -> dict[str, float]:
    """The streamed turns' metrics (see module docstring); empty when no turn streamed."""
    streamed = [t for t in turns if t.last_chunk_s is not None]
    if not streamed:
        return {}
    after = [t.first_token_s - t.last_chunk_s for t in streamed]
    start = [ttft(t) for t in streamed]
    return {"streamed_turns": float(len(streamed)),
            "ttft_streamed_p50": percentile(start, 50), "ttft_streamed_p99": percentile(start, 99),
            "ttft_after_last_chunk_p50": percentile(after, 50), "ttft_after_last_chunk_p99": percentile(after, 99),
            "invalidated_tokens": float(sum(t.invalidated_tokens for t in turns))}
