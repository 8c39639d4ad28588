"""A latency profile: how long a runner step takes, as a function of what it computes.

A step's time is modeled as

    base_s + per_seq_s * seqs + per_token_s * new_tokens + per_attn_s * sum(new_i * context_i)

(fixed cost; per-sequence overhead; the weight matmuls, which scale with new
tokens; attention, which scales with query tokens times keys). ``fit``
derives the coefficients from measured steps by least squares; the simulated
runner replays them. An analytic profile (``roofline``) instead takes the longer of a
step's compute and memory time on a named accelerator, plus the fixed costs. Saved as JSON so a profile measured on a GPU with a big
model can be loaded anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class StepShape(BaseModel):
    """What one step computed: per sequence, new tokens and context length after the step."""

    new_tokens: list[int]
    context: list[int]


class Roofline(BaseModel):
    """An analytic step cost: the longer of compute and memory traffic (a roofline), per step.

    compute = flops_per_token * new tokens + flops_per_seq * seqs (the LM head of sampled rows)
              + attn_flops_per_pair * sum(new_i * context_i);
    memory  = weight_bytes (every step reads the weights once) + kv_bytes_per_token * sum(context_i).
    ``flops_per_s`` and ``bytes_per_s`` are what the device achieves, not its datasheet peak.
    ``tether.workloads.analytic_profile`` builds these from a model's shape and an accelerator.
    """

    model_config = ConfigDict(extra="forbid")

    flops_per_token: float = Field(ge=0)
    flops_per_seq: float = Field(default=0.0, ge=0)
    attn_flops_per_pair: float = Field(default=0.0, ge=0)
    weight_bytes: float = Field(ge=0)
    kv_bytes_per_token: float = Field(default=0.0, ge=0)
    flops_per_s: float = Field(gt=0)
    bytes_per_s: float = Field(gt=0)

    def time(self, new_tokens: list[int], context: list[int]) -> float:
        flops = self.flops_per_token * sum(new_tokens) + self.flops_per_seq * len(new_tokens) \
            + self.attn_flops_per_pair * sum(n * c for n, c in zip(new_tokens, context))
        traffic = self.weight_bytes + self.kv_bytes_per_token * sum(context)
        return max(flops / self.flops_per_s, traffic / self.bytes_per_s)


class LatencyProfile(BaseModel):
    """Step-time model for one model on one machine.

    Example::

        prof = LatencyProfile(base_s=0.004, per_token_s=2e-4, per_attn_s=1e-9, per_seq_s=1e-4)
        prof.step_time([1, 1, 512], [900, 400, 512])
    """

    model_config = ConfigDict(extra="forbid")

    name: str = "custom"
    base_s: float = Field(ge=0)
    per_seq_s: float = Field(default=0.0, ge=0)
    per_token_s: float = Field(ge=0)
    per_attn_s: float = Field(default=0.0, ge=0)
    copy_s_per_block: float = Field(default=0.0, ge=0, description="device <-> host tier copy, per block")
    roofline: Roofline | None = Field(default=None, description="analytic step cost, added to base and per-seq")
    meta: dict = Field(default_factory=dict)

    def step_time(self, new_tokens: list[int], context: list[int]) -> float:
        if self.roofline is not None:  # analytic: fixed overheads plus max(compute, memory)
            return self.base_s + self.per_seq_s * len(new_tokens) + self.roofline.time(new_tokens, context)
        attn = sum(n * c for n, c in zip(new_tokens, context))
        return self.base_s + self.per_seq_s * len(new_tokens) + self.per_token_s * sum(new_tokens) \
            + self.per_attn_s * attn

    def prefill_time(self, tokens: int, context: int | None = None) -> float:
        """Time to prefill ``tokens`` new tokens ending at ``context`` (default: a fresh prompt)."""
        context = tokens if context is None else context
        return self.step_time([tokens], [context])

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LatencyProfile":
        return cls.model_validate(json.loads(Path(path).read_text()))

    @classmethod
    def fit(cls, shapes: list[StepShape], times: list[float], name: str = "measured") -> "LatencyProfile":
        """Least-squares fit (non-negative) of the step-time model to measured steps."""
        import numpy as np

        X = np.array([[1.0, len(s.new_tokens), sum(s.new_tokens),
                       sum(n * c for n, c in zip(s.new_tokens, s.context))] for s in shapes])
        coef = _nonnegative_lstsq(X, np.array(times))
        return cls(name=name, base_s=coef[0], per_seq_s=coef[1], per_token_s=coef[2], per_attn_s=coef[3],
                   meta={"samples": len(times)})


def _nonnegative_lstsq(X, y):
    """Least squares with coefficients >= 0: refit without the terms that come out negative."""
    import numpy as np

    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    Xs = X / scale  # columns span many orders of magnitude
    active = list(range(X.shape[1]))
    while True:
        sol, *_ = np.linalg.lstsq(Xs[:, active], y, rcond=None)
        if (sol >= 0).all() or len(active) == 1:
            coef = np.zeros(X.shape[1])
            coef[active] = np.maximum(sol, 0)
            return coef / scale
        active = [a for a, v in zip(active, sol) if v >= 0] or [active[int(np.argmax(sol))]]
