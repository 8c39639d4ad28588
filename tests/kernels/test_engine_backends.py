"""The engine gives the same logits with the reference ops as with the (interpreted) Triton ops."""

from __future__ import annotations

from tether.engine import EngineConfig, Request, SamplingParams, build_core
from tiny_model import tiny_llama


def _run(model, monkeypatch, backend: str):
    monkeypatch.setenv("TETHER_KERNELS", backend)
    core = build_core(EngineConfig(num_kv_blocks=16, block_size=16, max_num_batched_tokens=24), model)
    prompts = [list(range(3, 40)), list(range(50, 55))]
    for i, p in enumerate(prompts):  # ragged, chunked (24-token budget), then decodes
        core.add_request(Request(request_id=str(i), prompt_token_ids=p,
                                 sampling=SamplingParams(max_tokens=4, temperature=0, ignore_eos=True, logprobs=5)))
    outs: dict[str, list] = {}
    while core.has_work():
        for o in core.step():
            outs.setdefault(o.request_id, []).append(o)
    core.check_no_leaks()
    return outs


def test_reference_and_triton_engines_agree(monkeypatch):
    model = tiny_llama(seed=2)
    ref = _run(model, monkeypatch, "torch")
    tri = _run(model, monkeypatch, "triton")
    for rid in ref:
        assert [o.token_ids for o in ref[rid]] == [o.token_ids for o in tri[rid]]
        for a, b in zip(ref[rid], tri[rid]):
            ka, kb = a.logprobs[0], b.logprobs[0]
            assert ka.keys() == kb.keys()
            assert max(abs(ka[t] - kb[t]) for t in ka) < 1e-4
