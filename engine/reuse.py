"""Cross-agent KV reuse, core side (KVCOMM, RelayCaching): what to place, and what to keep.

* At admission (``plan``): known segments found in the prompt past its cached
  prefix become placements; under ``anchors`` each one gets its estimated delta
  or is marked to be prefilled densely and recorded.
* After each step (``after_step``): finished placements are counted, reported as
  ``reuse`` events, and recorded as anchors.
* When a request finishes (``capture``): the KV of its message contents and of its
  output (all but the last token, which has no KV) is stored as segments.

The runner does the tensor work (``placement.py``); ``reuse="off"`` leaves every
path as it was.
"""

from __future__ import annotations

from tether.engine.anchors import AnchorPool, placeholder
from tether.engine.placement import ReuseParams
from tether.engine.segments import SegmentStore
from tether.engine.sequence import Sequence

REUSE_RULES = ("off", "recompute", "anchors")


class KVReuse:
    def __init__(self, config, runner, clock, events):
        self.rule = config.reuse
        self.runner = runner
        self.clock = clock
        self.events = events
        model = getattr(runner, "model", None)
        # Rotating keys composes only for plain RoPE (LMCache refuses scaled variants too).
        exact_shift = model is not None and getattr(model, "attention_scaling", 1.0) == 1.0
        self.enabled = self.rule != "off" and runner.supports_reuse and exact_shift
        self.store = SegmentStore(config.reuse_store_tokens, config.reuse_min_tokens)
        self.min_share = config.reuse_min_share
        self.anchors = AnchorPool() if self.rule == "anchors" else None
        if self.enabled:
            runner.reuse_params = ReuseParams(config.reuse_check_layer, config.reuse_deviation_ratio,
                                              config.reuse_sink_tokens, config.reuse_tail_tokens)
        self.counters = {"reuse_placed_tokens": 0, "reuse_recomputed_tokens": 0, "reuse_query_tokens": 0,
                         "reuse_segments_stored": 0, "reuse_anchor_records": 0}

    def plan(self, seq: Sequence, hit_tokens: int) -> None:
        """Find known segments in ``seq``'s prompt past its cached prefix (admission)."""
        seq.placements = []
        if not self.enabled or not seq.kv_reuse or seq.num_output_tokens:
            return
        if seq.metrics.first_scheduled_time is None:
            self.counters["reuse_query_tokens"] += seq.num_prompt_tokens - hit_tokens
        prompt = seq.token_ids
        # The last prompt token is always computed: its logits sample the first output.
        seq.placements = self.store.match(prompt, hit_tokens, seq.num_prompt_tokens - 1)
        if sum(pl.length for pl in seq.placements) < self.min_share * (seq.num_prompt_tokens - hit_tokens):
            seq.placements = []
        for pl in seq.placements:
            if self.anchors is not None:
                self.anchors.prepare(pl, placeholder(prompt, pl.start))

    def after_step(self, seqs: list[Sequence]) -> None:
        for seq in seqs:
            for pl in seq.placements:
                if pl.reported or seq.num_computed_tokens < pl.end:
                    continue
                pl.reported = True
                recomputed = pl.length if pl.mode == "record" else len(pl.recompute)
                seq.metrics.reused_tokens += pl.length
                self.counters["reuse_placed_tokens"] += pl.length
                self.counters["reuse_recomputed_tokens"] += recomputed
                if pl.mode == "record":
                    self.anchors.record(pl, placeholder(seq.token_ids, pl.start))
                    self.counters["reuse_anchor_records"] += 1
                    pl.recorded_k, pl.recorded_v = [], []
                pl.delta_k = pl.delta_v = None
                self.events.emit("reuse", self.clock.now(), seq.request_id, seq.program_id,
                                 segment=pl.segment.segment_id, source_request_id=pl.segment.source_request_id,
                                 source_program_id=pl.segment.source_program_id, placed=pl.length,
                                 recomputed=recomputed, position=pl.start, mode=pl.mode)

    def capture(self, seq: Sequence) -> None:
        """Store the KV of ``seq``'s message contents and output (it is about to be freed)."""
        if not self.enabled or not seq.kv_reuse or not seq.block_table:
            return
        spans = list(seq.segment_spans or [])
        computed = seq.num_computed_tokens
        if computed > seq.num_prompt_tokens:
            spans.append((seq.num_prompt_tokens, computed))
        placed = sorted((pl.start, pl.end) for pl in seq.placements)
        for start, end in (piece for span in spans for piece in _outside(span, placed)):
            end = min(end, computed)
            ids = tuple(seq.token_ids[start:end])
            if end - start < self.store.min_tokens or ids in self.store:
                continue
            k, v = self.runner.read_kv(seq, start, end)
            if self.store.add(ids, k, v, seq.request_id, seq.program_id) is not None:
                self.counters["reuse_segments_stored"] += 1


def _outside(span: tuple[int, int], placed: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``span`` no placement covers (placed KV came from elsewhere: it is not stored
    again). A 1,024-token input with 64 tokens placed from another prompt still yields its other 960."""
    start, end = span
    out = []
    for s, e in placed:  # sorted by start
        if e <= start or s >= end:
            continue
        if s > start:
            out.append((start, s))
        start = max(start, e)
    if start < end:
        out.append((start, end))
    return out
