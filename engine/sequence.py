"""A request's state inside the engine: its tokens, progress and block table."""

from __future__ import annotations

import enum

from tether.engine.request import RequestMetrics
from tether.engine.sampling import SamplingParams


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    """Tokens (prompt + output), how many have KV in the cache, and the block table.

    ``priority_time`` is what queue policies sort on: the request's arrival, or
    its program's first arrival under program FCFS.
    """

    def __init__(self, request_id: str, prompt_token_ids: list[int], sampling: SamplingParams,
                 arrival_time: float, program_id: str | None = None, is_last_turn: bool = False,
                 turn: int | None = None):
        self.request_id = request_id
        self.token_ids: list[int] = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.sampling = sampling
        self.program_id = program_id
        self.is_last_turn = is_last_turn
        self.turn = turn
        self.arrival_time = arrival_time
        self.priority_time = arrival_time
        self.status = SeqStatus.WAITING
        self.num_computed_tokens = 0
        self.high_water = 0  # most tokens ever computed (recompute accounting after preemption)
        self.block_table: list[int] = []
        self.num_hashed_blocks = 0  # leading blocks of block_table registered in the prefix cache
        self.block_hashes: list[int] = []  # chained hash of each full block of token_ids
        self.finish_reason: str | None = None
        self.metrics = RequestMetrics(arrival_time=arrival_time, prompt_tokens=len(prompt_token_ids))
        self.text = ""  # detokenized output emitted so far

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def is_prefilling(self) -> bool:
        """True while tokens other than the newest one still lack KV (prompt or recompute)."""
        return self.num_tokens - self.num_computed_tokens > 1

    @property
    def is_finished(self) -> bool:
        return self.status == SeqStatus.FINISHED

    def __repr__(self) -> str:
        return (f"Sequence({self.request_id}, {self.status.value}, tokens={self.num_tokens}, "
                f"computed={self.num_computed_tokens}, blocks={len(self.block_table)})")
