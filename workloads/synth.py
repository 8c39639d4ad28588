"""Synthetic traces: programs drawn from published agent-workload distributions.

    trace = synthesize(500, seed=0, rate=0.5)             # Poisson arrivals, 0.5 programs/s
    trace = synthesize(64, seed=0, concurrency=16)        # closed loop: keep 16 in flight
    trace = synthesize(100, seed=0, profile="coding-agent")

A program (profile "swe-bench", after Continuum's mini-swe-agent runs on SWE-bench Verified):

- turns ~ Normal(10.9, 2.1), rounded, at least 2 (Continuum);
- turn 0 appends the system + task prompt, uniform 2,000-4,000 tokens;
- later turns append the previous tool's output: lognormal, sigma 1.055 (TraceLab's
  shape: median 860 with ~1.5k mean growth besides output), median scaled so that
- the prompt tokens summed over a program's turns average ~70k - Continuum's "~70K
  tokens per program". That sum re-counts the history each turn: with 10.9 turns, a
  3k first prompt and ~200-token answers, it leaves ~425 appended tokens per later
  turn (median ~243). TraceLab's median 860 would give ~130k, so it is profile
  "coding-agent" (Claude Code / Codex sessions), not the SWE-bench default;
- output ~ lognormal, median 200 tokens (TraceLab: 180-250), clipped to [1, 2048];
- each turn but the last calls a tool: class drawn from ``tool_mix``, a program name
  of that class, duration from ``durations.draw_duration`` (clipped at 60 s, the
  mini-swe-agent SWE-bench command timeout).

Arrivals: ``rate`` -> Poisson process (program 0 at t=0, exponential gaps with mean
1/rate); ``concurrency`` -> all arrive at 0 and ``meta["concurrency"]`` tells the replayer
to keep that many in flight; neither -> all at 0 (one batch). Same seed -> same trace,
and program i does not depend on ``n_programs``. ``assign_arrivals`` gives any trace
(e.g. loaded trajectories) the same Poisson arrivals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .durations import DEFAULT_CAP_S, draw_duration, lognormal_mean, mean_duration
from .trace import Program, ToolCallRecord, Trace, Turn


@dataclass(frozen=True)
class Profile:
    """The distributions a synthetic program is drawn from (token counts, tool mix)."""

    turns_mean: float = 10.9
    turns_sd: float = 2.1
    min_turns: int = 2
    first_append: tuple[int, int] = (2000, 4000)       # uniform, inclusive
    append_median: float = 243.0
    append_sigma: float = 1.055
    append_max: int = 16384
    output_median: float = 200.0
    output_sigma: float = 0.6
    output_max: int = 2048
    tool_mix: dict[str, float] = field(default_factory=lambda: {
        # mini-swe-agent on SWE-bench is bash only; assumed shares by what the commands do:
        # reading files dominates, then edits, searches, runs of tests and other commands.
        "view": 0.32, "edit": 0.20, "search": 0.15, "test": 0.13, "shell": 0.20})
    duration_cap_s: float | None = DEFAULT_CAP_S

    def mean_append_later(self) -> float:
        """Expected appended tokens of a turn after the first."""
        return lognormal_mean(self.append_median, self.append_sigma, self.append_max)

    def mean_output(self) -> float:
        return lognormal_mean(self.output_median, self.output_sigma, self.output_max)

    def mean_tool_duration(self) -> float:
        total = sum(self.tool_mix.values())
        return sum(w / total * mean_duration(c, self.duration_cap_s) for c, w in self.tool_mix.items())

    def mean_summed_prompt(self) -> float:
        """Expected prompt tokens summed over a program's turns (Continuum's per-program figure).

        Turn k's prompt = first + k * (appended + output), so the sum over T turns is
        T * first + T(T-1)/2 * (appended + output); E[T(T-1)/2] uses Var(T) (+1/12 for rounding).
        """
        first = sum(self.first_append) / 2
        t, var = self.turns_mean, self.turns_sd ** 2 + 1 / 12
        return t * first + (t * t + var - t) / 2 * (self.mean_append_later() + self.mean_output())


PROFILES: dict[str, Profile] = {
    "swe-bench": Profile(),
    # TraceLab coding-agent rounds: median appended 860 (mean ~1.5k: with output, the
    # published ~1.7k growth per step); tools as in a bash-driven coding agent.
    "coding-agent": Profile(append_median=860.0),
}

# Program names per class, so per-tool statistics (Continuum keys on the command's
# first word) see a realistic handful of names.
TOOL_NAMES: dict[str, tuple[str, ...]] = {
    "view": ("cat", "nl", "ls", "head"), "edit": ("sed", "cat"), "search": ("grep", "find"),
    "test": ("pytest",), "shell": ("python", "git", "pip"), "other": ("submit",),
}


def synthesize(n_programs: int, seed: int = 0, rate: float | None = None, concurrency: int | None = None,
               profile: str = "swe-bench") -> Trace:
    """``n_programs`` synthetic programs; see the module docstring for the distributions.

    >>> t = synthesize(3, seed=1, rate=2.0)
    >>> len(t.programs), t.programs[0].arrival_s, t.meta["profile"]
    (3, 0.0, 'swe-bench')
    """
    if n_programs < 0:
        raise ValueError(f"n_programs must be >= 0, got {n_programs}")
    if rate is not None and concurrency is not None:
        raise ValueError("give rate (open loop, Poisson arrivals) or concurrency (closed loop), not both")
    if rate is not None and not rate > 0:
        raise ValueError(f"rate must be > 0 programs/s, got {rate}")
    if concurrency is not None and concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    prof = PROFILES[profile]
    arrivals = _arrivals(n_programs, seed, rate)
    programs = [_program(i, seed, prof, profile, arrivals[i]) for i in range(n_programs)]
    meta = {"generator": "synthesize", "profile": profile, "seed": seed, "n_programs": n_programs,
            "arrival": "poisson" if rate is not None else "closed-loop" if concurrency else "batch",
            "targets": {"mean_turns": prof.turns_mean, "mean_append_later": prof.mean_append_later(),
                        "mean_output": prof.mean_output(), "mean_tool_duration_s": prof.mean_tool_duration(),
                        "mean_summed_prompt": prof.mean_summed_prompt()}}
    if rate is not None:
        meta["rate"] = rate
    if concurrency is not None:
        meta["concurrency"] = concurrency
    return Trace(programs=programs, meta=meta)


def assign_arrivals(trace: Trace, rate: float, seed: int = 0) -> Trace:
    """The same programs with Poisson arrivals at ``rate`` programs/s (program 0 at t=0), in trace order.

    For replaying loaded trajectories (which mostly arrive together at 0) as an open-loop stream.

    >>> t = assign_arrivals(synthesize(3, seed=0), rate=1.0, seed=0)
    >>> t.programs[0].arrival_s, t.meta["arrival"]
    (0.0, 'poisson')
    """
    if not rate > 0:
        raise ValueError(f"rate must be > 0 programs/s, got {rate}")
    times = _arrivals(len(trace.programs), seed, rate)
    programs = [p.model_copy(update={"arrival_s": a}) for p, a in zip(trace.programs, times)]
    meta = {k: v for k, v in trace.meta.items() if k != "concurrency"}
    return Trace(programs=programs, meta={**meta, "arrival": "poisson", "rate": rate, "arrival_seed": seed})


def _arrivals(n: int, seed: int, rate: float | None) -> list[float]:
    if rate is None or n == 0:
        return [0.0] * n
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0xA881])  # its own stream: arrivals don't shift programs
    gaps = rng.exponential(1.0 / rate, n - 1)
    return [0.0, *np.cumsum(gaps).tolist()]


def _program(i: int, seed: int, prof: Profile, profile: str, arrival: float) -> Program:
    rng = np.random.default_rng([seed & 0xFFFFFFFF, i])
    n_turns = max(prof.min_turns, int(round(rng.normal(prof.turns_mean, prof.turns_sd))))
    lo, hi = prof.first_append
    appends = [int(rng.integers(lo, hi + 1))]
    later = prof.append_median * np.exp(prof.append_sigma * rng.standard_normal(n_turns - 1))
    appends += [int(x) for x in np.minimum(np.rint(later), prof.append_max)]
    outs = prof.output_median * np.exp(prof.output_sigma * rng.standard_normal(n_turns))
    outs = np.clip(np.rint(outs), 1, prof.output_max).astype(int).tolist()
    classes = list(prof.tool_mix)
    weights = np.array([prof.tool_mix[c] for c in classes], dtype=float)
    picks = rng.choice(len(classes), size=n_turns - 1, p=weights / weights.sum())
    turns = []
    for k in range(n_turns):
        tool = None
        if k + 1 < n_turns:
            cls = classes[picks[k]]
            names = TOOL_NAMES.get(cls, ("tool",))
            tool = ToolCallRecord(name=names[int(rng.integers(len(names)))], tool_class=cls,
                                  duration_s=draw_duration(cls, rng, prof.duration_cap_s), duration_drawn=True)
        turns.append(Turn(append_tokens=appends[k], output_tokens=outs[k], tool=tool))
    return Program(program_id=f"synth-{profile}-{seed}-{i:05d}", arrival_s=arrival, source=f"synth:{profile}",
                   turns=turns)

