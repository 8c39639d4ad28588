"""Cross-agent KV reuse on a tiny random Llama (4 layers, so layers past the check layer exist).

What must hold: a segment placed behind the same prefix reproduces dense prefill;
keys rotated to a new position are exact where KV depends on position only
(layer 0); the block and segment bookkeeping never leaks; ``reuse="off"`` and
``kv_reuse=False`` change nothing.
"""

from __future__ import annotations

import pytest
import torch
from engine_helpers import greedy, make_core, req, run_all, tokens
from tiny_model import tiny_llama

from tether.engine.anchors import AnchorPool
from tether.engine.segments import SegmentStore


@pytest.fixture(scope="module")
def model4():
    return tiny_llama(num_layers=4)


def _ids(seed: int, n: int) -> list[int]:
    return torch.randint(3, 128, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


P, P2, S, X = _ids(1, 40), _ids(2, 23), _ids(3, 64), _ids(4, 5)


def _core(model, rule, **kw):
    kw.setdefault("enable_prefix_caching", False)  # so the placement, not the prefix cache, serves S
    return make_core(model, reuse=rule, num_kv_blocks=128, max_num_batched_tokens=256, **kw)


@pytest.mark.parametrize("rule", ["recompute", "anchors"])
def test_same_context_placement_matches_dense_prefill(model4, rule):
    """The segment's KV placed where it was computed, behind the same prefix, is that KV: the
    second request's logprobs equal the first's (rotation by 0 and correction change nothing)."""
    core = _core(model4, rule)
    prompt = P + S + X
    core.add_request(req("a", prompt, greedy(6, logprobs=5), segment_spans=[(40, 104)]))
    a = run_all(core)["a"]
    runs = 2 if rule == "anchors" else 1  # anchors: the first reuse records, the second applies
    for i in range(runs):
        core.add_request(req(f"b{i}", prompt, greedy(6, logprobs=5)))
        b = run_all(core)[f"b{i}"]
        assert b[-1].metrics.reused_tokens == 64
        assert tokens(b) == tokens(a)
        for la, lb in zip(a, b):
            for tok, lp in la.logprobs[0].items():
                assert lb.logprobs[0][tok] == pytest.approx(lp, abs=1e-4)
    st = core.stats()
    assert st["reuse_placed_tokens"] == 64 * runs and st["reuse_segments_stored"] == 1
    core.check_no_leaks()


def test_placed_keys_are_rotated_exactly(model4):
    """Layer 0's K/V depend on token and position only, so a segment placed at another
    position (``anchors`` leaves layer 0 uncorrected and uncomputed) must equal dense prefill there."""
    core = _core(model4, "anchors")
    core.add_request(req("a", P + S + X, greedy(2), segment_spans=[(40, 104)]))
    run_all(core)
    pool = core.reuse.anchors
    core.add_request(req("b", P2 + S + X, greedy(2)))  # records an anchor (dense over placed KV)
    run_all(core)
    assert sum(len(v) for v in pool.pools.values()) == 1
    seen = {}
    core.add_listener(lambda ev: seen.setdefault(ev.kind, ev))
    seq = core.add_request(req("c", P2 + S + X, greedy(2)))
    core.step()  # the prompt's one prefill step: placed KV is in seq's blocks now
    assert seq.placements and seq.placements[0].mode == "anchor"
    pos = list(range(23, 23 + 64))
    k_cache = core.runner.kv_caches[0][0]
    bs = core.pool.block_size
    slots = torch.tensor([seq.block_table[p // bs] * bs + p % bs for p in pos])
    placed_k = k_cache.view(-1, *k_cache.shape[2:])[slots].clone()
    run_all(core)
    dense = _core(model4, "off")
    seq_d = dense.add_request(req("d", P2 + S + X, greedy(2)))
    dense.step()
    kd = dense.runner.kv_caches[0][0]
    dense_k = kd.view(-1, *kd.shape[2:])[torch.tensor([seq_d.block_table[p // bs] * bs + p % bs for p in pos])]
    torch.testing.assert_close(placed_k, dense_k, atol=1e-5, rtol=1e-5)
    assert seen["reuse"].data["placed"] == 64 and seen["reuse"].data["mode"] == "anchor"
    run_all(dense)


def test_reuse_off_and_per_request_opt_out_change_nothing(model4):
    """reuse="off" is today's engine; kv_reuse=False on a request skips placement entirely."""
    outs = {}
    for name, rule, opt in (("off", "off", True), ("optout", "recompute", False)):
        core = _core(model4, rule, enable_prefix_caching=True)
        core.add_request(req("a", P + S + X, greedy(4, logprobs=3), segment_spans=[(40, 104)], kv_reuse=opt))
        run_all(core)
        core.add_request(req("b", P2 + S + X, greedy(4, logprobs=3), kv_reuse=opt))
        b = run_all(core)["b"]
        assert b[-1].metrics.reused_tokens == 0
        assert core.stats()["reuse_placed_tokens"] == 0
        outs[name] = [(o.token_ids, o.logprobs) for o in b]
    assert outs["off"] == outs["optout"]


def test_recompute_rule_recomputes_edges_and_deviating_tokens(model4):
    core = _core(model4, "recompute")
    core.add_request(req("a", P + S + X, greedy(2), segment_spans=[(40, 104)]))
    run_all(core)
    events = []
    core.add_listener(lambda ev: events.append(ev) if ev.kind == "reuse" else None)
    seq = core.add_request(req("b", P2 + S + X, greedy(2)))
    core.step()
    pl = seq.placements[0]
    assert pl.start == 23 and pl.length == 64
    sink, tail = core.config.reuse_sink_tokens, core.config.reuse_tail_tokens
    edges = set(range(23, 23 + sink)) | set(range(23 + 64 - tail, 23 + 64))
    assert edges <= set(pl.recompute)  # the segment's first and last tokens, always
    assert len(pl.recompute) < 64      # and not everything
    assert len(pl.deviation) == 64
    run_all(core)
    assert events and events[0].data["recomputed"] == len(pl.recompute)
    core.check_no_leaks()


def test_outputs_become_segments_and_chunked_prefill_places_them(model4):
    """An upstream request's output (all but its last token) serves a downstream prompt, across
    prefill chunks smaller than the segment."""
    core = make_core(model4, reuse="recompute", num_kv_blocks=128, max_num_batched_tokens=24)
    core.add_request(req("up", P, greedy(48)))
    out = tokens(run_all(core)["up"])
    assert core.stats()["reuse_segments_stored"] == 1  # 47 output tokens with KV
    events = []
    core.add_listener(lambda ev: events.append(ev.data) if ev.kind == "reuse" else None)
    core.add_request(req("down", P2 + out[:47] + X, greedy(3)))
    res = run_all(core)["down"]
    assert res[-1].metrics.reused_tokens == 47
    assert [(e["position"], e["placed"], e["source_request_id"]) for e in events] == [(len(P2), 47, "up")]
    core.check_no_leaks()


def test_preempted_and_aborted_placements_free_everything(model4):
    core = make_core(model4, reuse="recompute", num_kv_blocks=14, max_num_batched_tokens=32,
                     enable_prefix_caching=True)
    core.add_request(req("a", P + S + X, greedy(2), segment_spans=[(40, 104)]))
    run_all(core)
    core.add_request(req("b", P2 + S + X, greedy(40)))
    core.add_request(req("c", P + S + X, greedy(40)))
    core.step()
    core.abort("c")
    run_all(core)
    core.check_no_leaks()
    assert core.pool.num_used == 0


def test_segment_store_matches_at_any_offset_and_evicts_under_budget():
    store = SegmentStore(max_tokens=100, min_tokens=16)
    k = [torch.zeros(60, 1, 2)]
    seg = tuple(range(10, 70))
    store.add(seg, k, k)
    prompt = [1, 2, 3] + list(range(30, 70)) + [5, 6]   # the segment's tail, at another position
    (pl,) = store.match(prompt, 0, len(prompt))
    assert (pl.start, pl.offset, pl.length) == (3, 20, 40)
    assert store.match(prompt, 0, 18) == []  # 15 tokens: too short to place
    store.add(tuple(range(100, 160)), k, k)  # over budget: the least recently used goes
    assert seg not in store and store.num_tokens == 60
    assert store.match(prompt, 0, len(prompt)) == []


def test_anchor_pool_is_bounded_and_learns_first():
    from tether.engine.segments import Placement, Segment
    pool = AnchorPool(max_per_placeholder=2)
    seg = Segment("s", tuple(range(8)), [torch.randn(8, 1, 4) for _ in range(2)],
                  [torch.randn(8, 1, 4) for _ in range(2)])
    for i in range(4):
        pl = Placement(seg, 0, 0, 8)
        pool.prepare(pl, ("k",))
        if i == 0:
            assert pl.mode == "record"
        pl.mode = "record"
        pl.recorded_k = [[torch.randn(8, 1, 4)] for _ in range(2)]
        pl.recorded_v = [[torch.randn(8, 1, 4)] for _ in range(2)]
        pool.record(pl, ("k",))
    assert len(pool.pools[("k",)]) == 2 and pool.num_tokens == 16
    pl = Placement(seg, 0, 0, 8)
    pool.prepare(pl, ("k",))
    assert pl.mode in ("anchor", "record")
    if pl.mode == "anchor":
        assert pl.delta_k[1].shape == (8, 1, 4)


def test_front_end_spans_cover_each_message_content(default_model):
    """The chat template's rendering maps back to each message's content tokens (the segments)."""
    from tether.engine.engine import chat_prompt
    tok = default_model.tokenizer
    msgs = [{"role": "system", "content": "You are the reviewer. Be brief."},
            {"role": "user", "content": "The parser drops empty fields since version 3.2; see the trace below."},
            {"role": "assistant", "content": "I will check the serializer first."}]
    ids, spans = chat_prompt(tok, msgs)
    assert ids == tok.encode(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
                             add_special_tokens=False)
    assert [tok.decode(ids[a:b]) for a, b in spans] == [m["content"] for m in msgs]


def test_a_span_placed_in_part_stores_the_rest(model4):
    """A message span whose middle was placed from elsewhere still stores its other parts, so a later
    prompt finds them (a 1,024-token input with a 64-token placement used to be skipped whole)."""
    core = _core(model4, "recompute")
    core.add_request(req("a", P + S + X, greedy(1), segment_spans=[(len(P), len(P) + len(S))]))
    run_all(core)
    left, right = _ids(5, 40), _ids(6, 40)  # b's span: new text, then S (placed from a), then new text
    span = left + S + right
    core.add_request(req("b", P2 + span + X, greedy(1), segment_spans=[(len(P2), len(P2) + len(span))]))
    assert run_all(core)["b"][-1].metrics.reused_tokens == len(S)
    core.add_request(req("c", X + right + P, greedy(1)))  # c's prompt holds b's right part
    assert run_all(core)["c"][-1].metrics.reused_tokens == len(right)
    core.check_no_leaks()


def test_a_prompt_that_known_segments_barely_cover_is_prefilled_densely(model4):
    """``reuse_min_share``: 64 known tokens in a 364-token prompt (18%) are not worth the placement path."""
    long_tail = _ids(7, 300)
    for share, placed in ((0.2, 0), (0.1, 64)):
        core = _core(model4, "recompute", reuse_min_share=share)
        core.add_request(req("a", P + S + X, greedy(2), segment_spans=[(40, 104)]))
        run_all(core)
        core.add_request(req("b", P2 + S + long_tail, greedy(2)))
        assert run_all(core)["b"][-1].metrics.reused_tokens == placed
        core.check_no_leaks()
