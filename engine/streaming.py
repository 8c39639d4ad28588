"""Open prompts (Stream2LLM): a request whose prompt is still arriving.

An open sequence is prefilled as its chunks arrive, as ordinary chunked
prefill, except that its newest token is held back: computing the last prompt
token is what samples, so nothing is sampled before ``seal``. ``replace``
keeps the longest common prefix of token ids and rolls computed KV back to it
(a block that is cached or shared is never written again: the rollback then
goes back to its start), so
the KV left is exactly what prefilling the new prompt whole would produce.

The core calls these under its lock, between steps (no batch is in flight).

Example::

    seq = core.open_request(req)              # prompt so far; nothing sampled yet
    core.append_prompt(req.request_id, more)  # prefilled as budget allows
    core.replace_prompt(req.request_id, new)  # returns tokens invalidated
    core.seal_prompt(req.request_id)          # now the first token is sampled
"""

from __future__ import annotations

from tether.engine.kv_manager import KVCacheManager
from tether.engine.sequence import Sequence, SeqStatus


def common_prefix_len(a: list[int], b: list[int]) -> int:
    """How many leading token ids ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def is_idle_open(seq: Sequence, min_chunk: int = 1) -> bool:
    """An open prompt with less than ``min_chunk`` tokens it may compute now (it waits for more)."""
    return seq.prompt_open and seq.num_tokens - seq.num_computed_tokens - 1 < min_chunk


def set_prompt(seq: Sequence, ids: list[int], kv: KVCacheManager, now: float) -> int:
    """Make ``seq``'s whole prompt ``ids``; returns the computed tokens rolled back (invalidated).

    Computed tokens past the common prefix lose their KV: their blocks are freed (a full one
    stays in the prefix cache under its old content's hash, which is still true of it) and the
    sequence forgets their hashes, so nothing stale is registered for the new tokens."""
    if not seq.prompt_open:
        raise ValueError(f"request {seq.request_id!r} is sealed; its prompt can no longer change")
    lcp = common_prefix_len(seq.token_ids, ids)
    bs = kv.block_size
    invalidated = 0
    # At most len(ids) - 1 tokens may be computed while the prompt is open (the last one samples).
    limit = min(lcp, len(ids) - 1)
    if seq.num_computed_tokens > limit:
        keep = limit
        # A block cut by the common prefix is written again: only if it is private and uncached.
        if limit % bs and seq.status == SeqStatus.RUNNING and not kv.is_private(seq.block_table[limit // bs]):
            keep = limit - limit % bs
        keep_blocks = -(-keep // bs)
        invalidated = seq.num_computed_tokens - keep
        if seq.status == SeqStatus.RUNNING:
            kv.rollback(seq, keep_blocks)
            seq.block_table = seq.block_table[:keep_blocks]
        seq.num_computed_tokens = keep
        seq.placements = []
    seq.high_water = min(seq.high_water, seq.num_computed_tokens)  # the new tokens are not recompute
    del seq._block_hashes[lcp // bs:]
    seq.token_ids = list(ids)
    seq.num_prompt_tokens = len(ids)
    seq.metrics.prompt_tokens = len(ids)
    seq.metrics.invalidated_tokens += invalidated
    seq.metrics.last_chunk_time = now
    return invalidated


def park_idle(seq: Sequence, kv: KVCacheManager, cost) -> str:
    """An idle open prompt is about to be preempted: keep its full blocks on the host tier when
    copying them out and back costs less than prefilling them again (``cost``: the runner's
    measured ``copy_time_s`` / ``prefill_time_s``); else they are recomputed. Returns the choice."""
    full = seq.num_computed_tokens // kv.block_size
    if kv.host is None or full == 0:
        return "recompute"
    if 2 * cost.copy_time_s(full) >= cost.prefill_time_s(full * kv.block_size):
        return "recompute"
    seq.host_kept = seq.block_hashes(kv.block_size)[:full]
    kv.keep_on_host(seq.host_kept)  # copied out if evicted; admission finds them on the host
    return "host"


def unpark(seq: Sequence, kv: KVCacheManager) -> None:
    if seq.host_kept:
        kv.unkeep_on_host(seq.host_kept)
        seq.host_kept = []


def append_prompt(seq: Sequence, ids: list[int], now: float) -> None:
    """Add ``ids`` to the end of ``seq``'s open prompt."""
    if not seq.prompt_open:
        raise ValueError(f"request {seq.request_id!r} is sealed; its prompt can no longer change")
    seq.token_ids.extend(ids)
    seq.num_prompt_tokens = len(seq.token_ids)
    seq.metrics.prompt_tokens = seq.num_prompt_tokens
    seq.metrics.last_chunk_time = now


def seal_prompt(seq: Sequence, now: float) -> None:
    """The prompt is complete: the scheduler may compute its last token and sample."""
    seq.prompt_open = False
    seq.metrics.last_chunk_time = now  # the prompt is whole from here: TTFT after the last chunk
