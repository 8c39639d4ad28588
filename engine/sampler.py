"""Turn one row of logits per sequence into the next token (and its logprobs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tether.engine.guided import GrammarStates
from tether.engine.sampling import SamplingParams


@dataclass
class SampleResult:
    token_id: int
    logprobs: dict[int, float] | None = None


class Sampler:
    """Greedy, temperature, top-k and top-p sampling; per-request seeded generators; grammars.

    Example::

        sampler = Sampler(seed=0, tokenizer=hf_tokenizer)   # the tokenizer is needed for ``guided`` only
        [r] = sampler.sample(logits, [SamplingParams(temperature=0)], ["r1"], [None])
    """

    def __init__(self, seed: int = 0, tokenizer: Any = None):
        self._default = torch.Generator().manual_seed(seed)
        self._generators: dict[str, torch.Generator] = {}
        self.grammars = GrammarStates(tokenizer)  # per-request matchers of guided requests

    def set_tokenizer(self, tokenizer: Any) -> None:
        """The Hugging Face tokenizer whose vocabulary guided requests' grammars are compiled for."""
        self.grammars = GrammarStates(tokenizer)

    def forget(self, request_id: str) -> None:
        self._generators.pop(request_id, None)
        self.grammars.forget(request_id)

    def _generator(self, request_id: str, params: SamplingParams) -> torch.Generator:
        if params.seed is None:
            return self._default
        g = self._generators.get(request_id)
        if g is None:
            g = self._generators[request_id] = torch.Generator().manual_seed(params.seed)
        return g

    def sample(self, logits: torch.Tensor, params: list[SamplingParams], request_ids: list[str],
               forced: list[int | None]) -> list[SampleResult]:
        """``logits``: [n, vocab] fp32, one row per sequence that emits a token this step.

        ``forced[i]``, when not None, is emitted instead of a sampled token
        (``forced_output_ids``); its logprob is still the model's. A row whose params
        have ``guided`` picks only tokens its grammar allows; its logprobs are the
        model's own (before the mask), as for a forced token.
        """
        # Generators first: a bad seed fails here, before any row has drawn from its generator.
        gens = [None if forced[i] is not None or p.greedy else self._generator(request_ids[i], p)
                for i, p in enumerate(params)]
        # Grammar masks next (they may fail too), before any matcher advances.
        masked = self._masked_rows(logits, params, request_ids, forced)
        greedy = logits.argmax(dim=-1).tolist()  # on the logits' device: only n ids cross
        # Only the rows that sample or report logprobs come to the host.
        host_rows = [i for i, p in enumerate(params)
                     if p.logprobs is not None or (forced[i] is None and not p.greedy and i not in masked)]
        row = {i: j for j, i in enumerate(host_rows)}
        host = logits[host_rows].cpu() if host_rows else None
        want_lp = any(p.logprobs is not None for p in params)
        logp = torch.log_softmax(host, dim=-1) if want_lp else None
        out = []
        for i, p in enumerate(params):
            if forced[i] is not None:
                tok = forced[i]
            elif i in masked:
                tok = int(masked[i].argmax()) if p.greedy else self._sample_row(masked[i], p, gens[i])
            elif p.greedy:
                tok = greedy[i]
            else:
                tok = self._sample_row(host[row[i]], p, gens[i])
            lp = None
            if p.logprobs is not None:
                lp = self._top_logprobs(logp[row[i]], p.logprobs)
                lp[tok] = float(logp[row[i], tok])
            out.append(SampleResult(tok, lp))
        if masked:
            self.grammars.consume({request_ids[i]: out[i].token_id for i in masked})
        return out

    def _masked_rows(self, logits: torch.Tensor, params: list[SamplingParams], request_ids: list[str],
                     forced: list[int | None]) -> dict[int, torch.Tensor]:
        """Row index -> that row's logits on the host with its grammar's forbidden tokens at -inf."""
        rows = [i for i, p in enumerate(params) if p.guided is not None and forced[i] is None]
        if not rows:
            return {}
        sub = logits[rows].clone()
        self.grammars.mask_logits(sub, [request_ids[i] for i in rows], [params[i].guided for i in rows])
        sub = sub.cpu()
        return {i: sub[j] for j, i in enumerate(rows)}

    @staticmethod
    def _top_logprobs(row: torch.Tensor, k: int) -> dict[int, float]:
        if k == 0:
            return {}
        vals, idx = row.topk(k)
        return dict(zip(idx.tolist(), vals.tolist()))

    @staticmethod
    def _sample_row(row: torch.Tensor, p: SamplingParams, gen: torch.Generator) -> int:
        row = row / p.temperature
        if p.top_k and p.top_k < row.shape[-1]:
            kth = row.topk(p.top_k).values[-1]
            row = row.masked_fill(row < kth, float("-inf"))
        probs = torch.softmax(row, dim=-1)
        if p.top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            cum = sorted_p.cumsum(-1)
            drop = cum - sorted_p > p.top_p  # keep the smallest set whose mass reaches top_p
            sorted_p[drop] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
        return int(torch.multinomial(probs, 1, generator=gen).item())
