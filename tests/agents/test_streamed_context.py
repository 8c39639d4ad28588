"""``ctx.chat`` with a message whose content is an async iterable of chunks (agents/streamed.py)."""

from __future__ import annotations

import asyncio

from tether.agents import Context
from tether.agents.streamed import Revised
from tether.engine import Engine, EngineConfig, RequestMetrics, RequestOutput
from tether.runtime.client import LocalClient
from tether.runtime.program import ProgramServices

HEAD = "Say what the crawler does first, from this context:\n"
FINAL = "The crawler reads robots.txt, then fetches the seed page."


async def _chunks():
    for c in ("The crawler fet", "ches the seed page", ", then follows links."):
        await asyncio.sleep(0.02)
        yield c
    yield Revised(FINAL)  # a re-rank revised the results


class _Local(LocalClient):
    """The in-process client with the ``complete`` call a program's client has."""

    async def complete(self, request):
        return [o async for o in self.generate(request)]


class _Remote:
    """A client without an in-process engine: it records what it was sent."""

    def __init__(self):
        self.requests = []

    async def complete(self, request):
        self.requests.append(request)
        return [RequestOutput(request.request_id, [7], "ok", finished=True, finish_reason="stop",
                              metrics=RequestMetrics(0.0, prompt_tokens=3, output_tokens=1))]


def test_streamed_content_on_a_local_engine_equals_the_whole_message(default_model):
    async def run():
        engine = Engine(EngineConfig(num_kv_blocks=128, max_num_batched_tokens=64, enable_prefix_caching=False),
                        hf_model=default_model.hf_model, tokenizer=default_model.tokenizer)
        ctx = Context(ProgramServices("p", _Local(engine), None), "main")
        kw = dict(max_tokens=10, temperature=0, ignore_eos=True)
        streamed = await ctx.chat([{"role": "user", "content": HEAD}, {"role": "user", "content": _chunks()}], **kw)
        whole = await ctx.chat([{"role": "user", "content": HEAD}, {"role": "user", "content": FINAL}], **kw)
        engine.core.check_no_leaks()
        await engine.close()
        return streamed, whole

    streamed, whole = asyncio.run(run())
    assert streamed.token_ids == whole.token_ids and streamed.raw_text == whole.raw_text
    assert streamed.usage.prompt_tokens == whole.usage.prompt_tokens


def test_streamed_content_on_a_remote_client_is_sent_whole_when_complete():
    remote = _Remote()
    ctx = Context(ProgramServices("p", remote, None), "main")
    reply = asyncio.run(ctx.chat([{"role": "user", "content": _chunks()}], max_tokens=4))
    assert reply.raw_text == "ok" and remote.requests[0].messages[-1]["content"] == FINAL


def test_bm25_retriever_streams_by_readiness_then_reranks():
    from tether.agents.retrieval import BM25Retriever

    r = BM25Retriever.from_package(shards=4)
    query = "host tier copies of evicted blocks"
    top = r.search(query, k=3)
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1] > 0
    assert "host" in top[0][0].lower()

    async def collect():
        return [c async for c in r.stream(query, k=3)]

    chunks = asyncio.run(collect())
    assert all(isinstance(c, str) for c in chunks[:-1]) and isinstance(chunks[-1], Revised)
    assert chunks[-1].text == "".join(p + "\n" for p, _ in top)  # the re-rank: global score order
    assert {c.strip() for c in chunks[:-1]} >= {p for p, _ in top}

    remote = _Remote()
    ctx = Context(ProgramServices("p", remote, None), "main")
    asyncio.run(ctx.chat([{"role": "user", "content": "Q\n"}, {"role": "user", "content": r.stream(query, k=3)}]))
    assert remote.requests[0].messages[-1]["content"] == chunks[-1].text
