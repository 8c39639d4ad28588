"""A request's state inside the engine core: its tokens, progress and block table."""

from __future__ import annotations

import enum

from tether.engine.request import RequestMetrics
from tether.engine.sampling import SamplingParams


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


def hash_block(parent: int | None, token_ids: tuple[int, ...]) -> int:
    """A full block's prefix identity: its tokens, chained on the previous block's hash."""
    return hash((parent, token_ids))


class Sequence:
    """Tokens (prompt + output), how many have KV in the cache, and the block table.

    The scheduler writes ``block_table`` and ``num_computed_tokens`` from what the
    KV manager returns; the KV manager never writes a sequence.
    """

    def __init__(self, request_id: str, prompt_token_ids: list[int], sampling: SamplingParams,
                 arrival_time: float, program_id: str | None = None, is_last_turn: bool = False,
                 turn: int | None = None, segment_spans: list[tuple[int, int]] | None = None,
                 kv_reuse: bool = True):
        self.request_id = request_id
        self.token_ids: list[int] = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.sampling = sampling
        self.program_id = program_id
        self.is_last_turn = is_last_turn
        self.turn = turn
        self.arrival_time = arrival_time
        self.status = SeqStatus.WAITING
        self.num_computed_tokens = 0
        self.high_water = 0  # most tokens ever computed (recompute accounting after preemption)
        self.block_table: list[int] = []
        self._block_hashes: list[int] = []  # chained hash of each full block of token_ids
        self.finish_reason: str | None = None
        self.segment_spans = segment_spans  # message contents: spans whose KV may serve other prompts
        self.kv_reuse = kv_reuse
        self.placements: list = []  # segments' KV placed in this prompt (reuse.py), set at admission
        self.prompt_open = False  # the prompt is still arriving (streaming.py): nothing is sampled yet
        self.host_kept: list[int] = []  # block hashes kept on the host tier while preempted (streaming.py)
        self.metrics = RequestMetrics(arrival_time=arrival_time, prompt_tokens=len(prompt_token_ids))

    def block_hashes(self, block_size: int) -> list[int]:
        """The chained hash of every full block of tokens so far (extended as tokens are added)."""
        hashes = self._block_hashes
        while (len(hashes) + 1) * block_size <= len(self.token_ids):
            i = len(hashes)
            hashes.append(hash_block(hashes[-1] if hashes else None,
                                     tuple(self.token_ids[i * block_size:(i + 1) * block_size])))
        return hashes

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


def stop_reason(seq: Sequence, token_id: int, eos_token_ids: set[int]) -> str | None:
    """Why ``seq`` ends with its newest token ``token_id`` (``stop``/``length``), or None.

    Stop strings are the front end's (they need text); the core stops on token ids."""
    sp = seq.sampling
    reason = None
    if sp.forced_output_ids is not None:
        if seq.num_output_tokens >= len(sp.forced_output_ids):
            reason = "length"
    elif (token_id in eos_token_ids and not sp.ignore_eos) or token_id in sp.stop_token_ids:
        reason = "stop"
    # Admission bounds prompt + max_tokens by the context, so this also bounds the context.
    if reason is None and seq.num_output_tokens >= sp.max_tokens:
        reason = "length"
    return reason
