"""``tether bench reuse``: cross-agent KV reuse against dense prefill, measured in one run.

KVCOMM's setting scaled to a CPU: 5 fully connected agents per query (each reads the
shared input and every earlier agent's answer), distinct ~512-token system prompts,
a ~1K-token shared input (real text: SWE-bench agent trajectories shipped in
``bench_data/``, repeated lines removed, disjoint windows per prompt), greedy answers.
One warm-up query fills the prefix cache with the system prompts (and, for
``anchors``, the first anchors) in every arm; then the measured queries. Arms:
``off`` (dense), ``recompute``, ``anchors``, each on its own engine over the same
weights, taking turns agent by agent so the machine's load hits them alike.
Fidelity is checked per agent on the exact prompt the reuse arm saw, against a
dense reference engine: greedy agreement of the first 32 tokens (the share before
the first difference), top-1 agreement and KL at the last prompt position, and
per-layer K/V deviation of the placed tokens (reuse KV vs dense KV, same positions).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import torch

from tether.engine.config import EngineConfig
from tether.engine.cpu_tuning import cpu_info
from tether.engine.engine import Engine, chat_prompt
from tether.engine.model_loader import load_model
from tether.engine.request import Request
from tether.engine.sampling import SamplingParams
from tether.engine.sequence import hash_block

AGENTS = 5
ROLES = ["planner who splits the task into steps", "engineer who proposes a concrete code change",
         "tester who names what could break", "reviewer who checks the change against the issue",
         "writer who summarizes the outcome for the maintainers"]
FIDELITY_TOKENS = 32


def _corpus() -> str:
    path = Path(__file__).with_name("bench_data") / "agent-trajectories.txt"
    return path.read_text()


def _window(tok, text: str, start_token: int, n: int) -> str:
    """``n`` tokens of the corpus from ``start_token`` (wrapping around)."""
    ids = tok.encode(text, add_special_tokens=False)
    start_token %= len(ids)
    return tok.decode((ids + ids)[start_token:start_token + n])


def _messages(system: str, shared: str, answers: list[str]) -> list[dict]:
    msgs = [{"role": "system", "content": system},
            {"role": "user", "content": f"Task input:\n{shared}"}]
    for j, a in enumerate(answers):
        msgs.append({"role": "user", "content": f"Answer of agent {j + 1}:"})
        msgs.append({"role": "assistant", "content": a})
    msgs.append({"role": "user", "content": "Now give your own answer, briefly."})
    return msgs


class _LogitTap:
    """Keeps the logits each request sampled its first token from (bench instrumentation)."""

    def __init__(self, engine: Engine):
        self.first: dict[str, torch.Tensor] = {}
        sampler = engine.core.runner.sampler
        inner = sampler.sample

        def sample(logits, params, rids, forced):
            for i, rid in enumerate(rids):
                self.first.setdefault(rid, logits[i].detach().clone())
            return inner(logits, params, rids, forced)
        sampler.sample = sample


async def _ask(engine: Engine, msgs: list[dict], max_tokens: int, rid: str) -> dict:
    req = Request(request_id=rid, messages=msgs, sampling=SamplingParams(max_tokens=max_tokens, temperature=0))
    ids, text, metrics = [], "", None
    async for out in engine.generate(req):
        ids += out.token_ids
        text += out.text
        if out.finished:
            metrics = out.metrics
    return {"ids": ids, "text": text, "ttft": metrics.ttft, "prompt": metrics.prompt_tokens,
            "prefix_hit": metrics.prefix_hit_tokens, "reused": metrics.reused_tokens}


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    p = torch.log_softmax(p_logits.float(), -1)
    q = torch.log_softmax(q_logits.float(), -1)
    return float((p.exp() * (p - q)).sum())


async def _fidelity(engine: Engine, reference: Engine, taps: dict, msgs: list[dict], r: dict, rid: str,
                    placed: list[int]) -> dict:
    """The reuse arm's answer to ``msgs`` against dense prefill of the same prompt."""
    ref = await _ask(reference, msgs, FIDELITY_TOKENS, "ref-" + rid)
    got, want = r["ids"][:FIDELITY_TOKENS], ref["ids"]
    n = min(len(got), len(want))
    agree = next((i for i in range(n) if got[i] != want[i]), n)
    lp_r, lp_d = taps[engine].first[rid], taps[reference].first["ref-" + rid]
    ids = chat_prompt(engine.tokenizer, msgs)[0]
    return {"greedy_agreement": agree / max(1, n), "top1_agree": int(lp_r.argmax()) == int(lp_d.argmax()),
            "kl": _kl(lp_d, lp_r), "layers": _deviation(_cached_kv(engine, ids, placed),
                                                         _cached_kv(reference, ids, placed))}


def _cached_kv(engine: Engine, ids: list[int], positions: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (K, V) at ``positions`` of prompt ``ids``, read from the prefix cache's blocks."""
    core = engine.core
    bs = core.pool.block_size
    hashes, parent = [], None
    for i in range(len(ids) // bs):
        parent = hash_block(parent, tuple(ids[i * bs:(i + 1) * bs]))
        hashes.append(parent)
    blocks = core.kv.cached_prefix(hashes)
    positions = [p for p in positions if p // bs < len(blocks)]
    slots = torch.tensor([blocks[p // bs] * bs + p % bs for p in positions], dtype=torch.int64)
    return [(k.view(-1, *k.shape[2:])[slots].float(), v.view(-1, *v.shape[2:])[slots].float())
            for k, v in core.runner.kv_caches]


def _deviation(a: list, b: list) -> list[dict]:
    out = []
    for (ka, va), (kb, vb) in zip(a, b):
        if not len(ka):
            return []
        out.append({"k": float((1 - torch.nn.functional.cosine_similarity(ka, kb, dim=-1)).mean()),
                    "v": float((1 - torch.nn.functional.cosine_similarity(va, vb, dim=-1)).mean())})
    return out


def run(queries: int = 2, answer_tokens: int = 128, system_tokens: int = 512, input_tokens: int = 1024,
        rules: tuple[str, ...] = ("recompute", "anchors"), verbose: bool = False) -> dict:
    loaded = load_model("default", torch.float32, "cpu")
    hf, tok = loaded.hf_model, loaded.tokenizer
    text = _corpus()
    # Disjoint windows of the corpus (its repeated lines removed), so a query's input is new text.
    system = [f"You are agent {k + 1} of {AGENTS}, the {ROLES[k]}. Reference notes follow.\n"
              + _window(tok, text, (system_tokens + 8) * k, system_tokens) for k in range(AGENTS)]
    first_input = (system_tokens + 8) * AGENTS + 100
    inputs = [_window(tok, text, first_input + (input_tokens + 50) * q, input_tokens) for q in range(queries + 1)]
    cfg = dict(max_num_batched_tokens=4096, kv_cache_memory_gb=1.0)
    reference = Engine(EngineConfig(reuse="off", **cfg), hf_model=hf, tokenizer=tok)
    ref_tap = _LogitTap(reference)
    placed: dict[str, list[int]] = {}
    stats: dict[str, dict] = {}

    def on_event(ev):
        if ev.kind == "reuse":
            placed.setdefault(ev.request_id, []).extend(range(ev.data["position"],
                                                              ev.data["position"] + ev.data["placed"]))

    async def main():
        arms = ("off", *rules)
        engines = {arm: Engine(EngineConfig(reuse=arm, **cfg), hf_model=hf, tokenizer=tok) for arm in arms}
        taps = {e: _LogitTap(e) for e in engines.values()}
        taps[reference] = ref_tap
        for e in engines.values():
            e.add_listener(on_event)
        result = {arm: [] for arm in arms}
        fidelity = {r: [] for r in rules}
        answers = {arm: [] for arm in arms}
        for q in range(queries + 1):
            for arm in arms:
                answers[arm] = []
                result[arm].append([])
            for k in range(AGENTS):
                # Arms take turns agent by agent, so a change in the machine's load hits them alike.
                for arm, engine in engines.items():
                    msgs = _messages(system[k], inputs[q], answers[arm])
                    rid = f"{arm}-q{q}-a{k}"
                    r = await _ask(engine, msgs, answer_tokens, rid)
                    if verbose:
                        print(f"[bench reuse] {rid}: prompt {r['prompt']}, prefix hit {r['prefix_hit']}, "
                              f"reused {r['reused']}, ttft {r['ttft']:.3f} s", file=sys.stderr, flush=True)
                    answers[arm].append(r["text"])
                    result[arm][-1].append(r)
                    if arm != "off" and q > 0:  # the first query warms every arm up
                        f = await _fidelity(engine, reference, taps, msgs, r, rid, placed.get(rid, []))
                        fidelity[arm].append({"query": q, "agent": k + 1, **f})
        for arm, engine in engines.items():
            stats[arm] = engine.stats()
            result[arm] = result[arm][1:]
            await engine.close()
        await reference.close()
        return result, fidelity

    result, fidelity = asyncio.run(main())
    return _report(result, fidelity, stats)


def _report(result: dict, fidelity: dict, arm_stats: dict) -> dict:
    dense = result["off"]
    rep = {"cpu": cpu_info(), "agents": AGENTS, "queries": len(dense), "rules": {}}
    for arm, chains in result.items():
        if arm == "off":
            continue
        per_agent = []
        for k in range(AGENTS):
            t_d = [c[k]["ttft"] for c in dense]
            t_r = [c[k]["ttft"] for c in chains]
            not_cached = sum(c[k]["prompt"] - c[k]["prefix_hit"] for c in chains)
            placed = sum(c[k]["reused"] for c in chains)
            fid = [f for f in fidelity[arm] if f["agent"] == k + 1]
            per_agent.append({"agent": k + 1, "ttft_dense_s": sum(t_d) / len(t_d), "ttft_reuse_s": sum(t_r) / len(t_r),
                              "ttft_speedup": sum(t_d) / sum(t_r), "reuse_rate": placed / not_cached if not_cached else 0,
                              "prompt_tokens": chains[-1][k]["prompt"],
                              "greedy_agreement": sum(f["greedy_agreement"] for f in fid) / len(fid),
                              "top1_agreement": sum(f["top1_agree"] for f in fid) / len(fid),
                              "kl": sum(f["kl"] for f in fid) / len(fid)})
        all_d = sum(a["ttft_dense_s"] for a in per_agent)
        all_r = sum(a["ttft_reuse_s"] for a in per_agent)
        placed = sum(c[k]["reused"] for c in chains for k in range(AGENTS))
        not_cached = sum(c[k]["prompt"] - c[k]["prefix_hit"] for c in chains for k in range(AGENTS))
        stats = arm_stats[arm]
        rep["rules"][arm] = {
            "ttft_speedup": {"last_agent": per_agent[-1]["ttft_speedup"], "mean": all_d / all_r},
            "reuse_rate": placed / not_cached if not_cached else 0.0,
            "greedy_agreement": sum(f["greedy_agreement"] for f in fidelity[arm]) / len(fidelity[arm]),
            "top1_agreement": sum(f["top1_agree"] for f in fidelity[arm]) / len(fidelity[arm]),
            "kl_mean": sum(f["kl"] for f in fidelity[arm]) / len(fidelity[arm]),
            "recomputed_share": stats["reuse_recomputed_tokens"] / max(1, stats["reuse_placed_tokens"]),
            "layer_deviation": _mean_layers([f["layers"] for f in fidelity[arm] if f["layers"]]),
            "per_agent": per_agent}
    best = max(rep["rules"], key=lambda r: (rep["rules"][r]["greedy_agreement"] >= 0.95,
                                            rep["rules"][r]["ttft_speedup"]["last_agent"]))
    rep.update(best_rule=best, ttft_speedup=rep["rules"][best]["ttft_speedup"],
               reuse_rate=rep["rules"][best]["reuse_rate"], greedy_agreement=rep["rules"][best]["greedy_agreement"])
    return rep


def _mean_layers(per_prompt: list[list[dict]]) -> list[dict]:
    """Per layer, the mean K and V deviation over the prompts that placed tokens."""
    if not per_prompt:
        return []
    return [{"layer": i, "k": sum(p[i]["k"] for p in per_prompt) / len(per_prompt),
             "v": sum(p[i]["v"] for p in per_prompt) / len(per_prompt)} for i in range(len(per_prompt[0]))]
