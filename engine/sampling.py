"""Sampling parameters of a request, validated (errors name the field)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tether.engine.guided import Guided


class SamplingParams(BaseModel):
    """How to pick each output token.

    Example::

        SamplingParams(max_tokens=64, temperature=0.7, top_p=0.9, seed=1, stop=["\\n\\n"])

    ``temperature=0`` (or below 1e-5) is greedy. ``logprobs=k`` returns, per emitted token, the
    log-probabilities of the emitted token and the ``k`` most likely ones.
    ``forced_output_ids`` makes the emitted tokens exactly this list (the model
    still runs every decode step; stop conditions do not apply), and the request
    finishes when the list is used up: the replay harness replays recorded outputs
    with it. ``guided`` constrains the output to a grammar (a JSON schema, any
    JSON object, a regex or a Lark grammar; see ``tether.engine.guided``), e.g.
    ``SamplingParams(guided=Guided(json_schema=schema))``.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=100.0)
    top_k: int = Field(default=0, ge=0, description="0 disables top-k")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1, description="a 64-bit signed integer")
    stop_token_ids: list[int] = Field(default_factory=list)
    stop: list[str] = Field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=20)
    forced_output_ids: list[int] | None = None
    guided: Guided | None = None

    @model_validator(mode="after")
    def _check(self) -> "SamplingParams":
        if self.forced_output_ids is not None:
            if not self.forced_output_ids:
                raise ValueError("forced_output_ids: must not be empty (omit it to sample)")
            if len(self.forced_output_ids) > self.max_tokens:
                # The forced list defines the output length.
                object.__setattr__(self, "max_tokens", len(self.forced_output_ids))
        if self.guided is not None and self.forced_output_ids is not None:
            # A forced output is not sampled, so no grammar applies: replaying a recorded reply through a
            # caller that constrains by default (the SDK's tools, a server's tool_choice) must still work.
            object.__setattr__(self, "guided", None)
        if any(not s for s in self.stop):
            raise ValueError("stop: stop strings must be non-empty")
        return self

    @property
    def greedy(self) -> bool:
        # A temperature this small divides logits into inf/nan; it means greedy (as in vLLM).
        return self.temperature < 1e-5
