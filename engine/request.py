"""What crosses the engine's boundary: requests in, outputs and metrics out."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tether.engine.sampling import SamplingParams


class Request(BaseModel):
    """One LLM call.

    Example::

        Request(messages=[{"role": "user", "content": "Hi"}],
                sampling=SamplingParams(max_tokens=32), program_id="agent-7")

    Give either ``prompt_token_ids`` or ``messages`` (rendered with the model's
    chat template). ``program_id`` ties the turns of one agent program together
    (program FCFS, pins); ``turn`` is the call's index in its program and
    ``is_last_turn`` says no further turn will follow.
    """

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    prompt_token_ids: list[int] | None = None
    messages: list[dict[str, Any]] | None = None
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    program_id: str | None = None
    turn: int | None = Field(default=None, ge=0, description="the turn's index within its program")
    is_last_turn: bool = False
    kv_reuse: bool = Field(default=True, description="let this prompt reuse other prompts' KV (placed segments)")
    segment_spans: list[tuple[int, int]] | None = Field(
        default=None, description="[start, end) token spans of the prompt whose KV may serve later prompts "
        "(set by the front end: each message's content)")

    @model_validator(mode="after")
    def _one_prompt(self) -> "Request":
        if (self.prompt_token_ids is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt_token_ids or messages")
        if self.prompt_token_ids is not None and not self.prompt_token_ids:
            raise ValueError("prompt_token_ids: the prompt is empty; give at least one token")
        if self.messages is not None and not self.messages:
            raise ValueError("messages: the list is empty; give at least one message")
        return self


class RequestRejected(ValueError):
    """The request can never be served as given; the message says what to change."""


def check_request(request: Request, vocab_size: int, max_model_len: int, pool) -> list[int]:
    """The request's prompt ids, if the core can ever serve it; else ``RequestRejected`` saying why."""
    if request.prompt_token_ids is None:
        raise RequestRejected("the engine core takes token ids: render messages with the Engine front end, "
                              "or pass prompt_token_ids")
    ids = list(request.prompt_token_ids)
    sp = request.sampling
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise RequestRejected(f"prompt token id {bad[0]} is outside the vocabulary [0, {vocab_size})")
    if sp.forced_output_ids is not None and any(not 0 <= t < vocab_size for t in sp.forced_output_ids):
        raise RequestRejected(f"forced_output_ids: token ids must lie in [0, {vocab_size})")
    for start, end in request.segment_spans or ():
        if not 0 <= start < end <= len(ids):
            raise RequestRejected(f"segment_spans: ({start}, {end}) is not a span of the {len(ids)}-token prompt")
    total = len(ids) + sp.max_tokens
    if total > max_model_len:
        raise RequestRejected(
            f"prompt ({len(ids)} tokens) + max_tokens ({sp.max_tokens}) = {total} exceeds the model's "
            f"context of {max_model_len} tokens; shorten the prompt or lower max_tokens")
    blocks = -(-total // pool.block_size)
    if blocks > pool.num_blocks:
        raise RequestRejected(
            f"prompt + max_tokens needs {blocks} KV blocks but the pool has {pool.num_blocks}; "
            "lower max_tokens or give the engine more KV memory (num_kv_blocks / kv_cache_memory_gb)")
    return ids


@dataclass
class RequestMetrics:
    """Per-request timings (seconds, on the engine's clock) and token counts."""

    arrival_time: float
    prompt_tokens: int = 0
    prefix_hit_tokens: int = 0
    reused_tokens: int = 0  # placed from other prompts' KV (cross-agent reuse)
    output_tokens: int = 0
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finished_time: float | None = None
    preemptions: int = 0
    last_chunk_time: float | None = None  # a streamed prompt's seal (engine/streaming.py)
    invalidated_tokens: int = 0  # computed tokens a streamed prompt's replace rolled back

    @property
    def ttft_after_last_chunk(self) -> float | None:
        """Time to first token from the moment the prompt was complete (arrival if not streamed)."""
        if self.first_token_time is None:
            return None
        return self.first_token_time - (self.last_chunk_time if self.last_chunk_time is not None
                                        else self.arrival_time)

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time

    @property
    def decode_time(self) -> float | None:
        if self.finished_time is None or self.first_token_time is None:
            return None
        return self.finished_time - self.first_token_time


@dataclass
class RequestOutput:
    """New tokens of one request from one engine step.

    ``token_ids`` and ``text`` are new since the previous output; ``logprobs``
    (when asked) has one dict per new token, token id -> log-probability.
    ``metrics`` is set on the final output.
    """

    request_id: str
    token_ids: list[int]
    text: str
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length" | "abort" | "error"
    logprobs: list[dict[int, float]] | None = None
    metrics: RequestMetrics | None = None
    error: str | None = None
