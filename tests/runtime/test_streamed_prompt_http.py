"""The streamed-prompt extension endpoints over HTTP (in-process ASGI) on the default model: a
prompt opened, appended (cut mid-word), revised, sealed and completed answers like the same
final prompt sent whole to /v1/chat/completions; bad calls get clear 4xx errors."""

from __future__ import annotations

import asyncio
import json

import httpx

from tether.engine import Engine, EngineConfig
from tether.runtime.client import LocalClient
from tether.runtime.server import create_app

QUESTION = "Using the context, say what the crawler does first.\nContext:\n"
SAMPLING = {"max_tokens": 12, "temperature": 0, "ignore_eos": True}


def _sse_text(body: str) -> tuple[str, dict]:
    text, last = "", {}
    for line in body.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunk = json.loads(line[6:])
            text += chunk["choices"][0]["delta"].get("content", "")
            last = chunk
    assert body.rstrip().endswith("data: [DONE]")
    return text, last


def test_streamed_prompt_endpoints(default_model):
    async def run():
        engine = Engine(EngineConfig(num_kv_blocks=128, max_num_batched_tokens=64, enable_prefix_caching=False),
                        hf_model=default_model.hf_model, tokenizer=default_model.tokenizer)
        app = create_app(LocalClient(engine, "smollm2"), model_name="smollm2")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            r = await http.post("/v1/streamed_prompts", json={"messages": [{"role": "user", "content": QUESTION}],
                                                              "sampling": SAMPLING})
            assert r.status_code == 200, r.text
            sid = r.json()["id"]
            for chunk in ("The crawler fet", "ches the seed page, then follows li", "nks."):
                r = await http.post(f"/v1/streamed_prompts/{sid}/append", json={"text": chunk})
                assert r.status_code == 200 and r.json()["prompt_tokens"] > 0
            while engine.core.has_work():
                await asyncio.sleep(0.01)
            final = "The crawler reads robots.txt, then fetches the seed page."
            r = await http.post(f"/v1/streamed_prompts/{sid}/replace", json={"text": QUESTION + final})
            assert r.status_code == 200 and r.json()["invalidated_tokens"] > 0
            assert (await http.post(f"/v1/streamed_prompts/{sid}/seal")).status_code == 200
            r = await http.post(f"/v1/streamed_prompts/{sid}/append", json={"text": "late"})
            assert r.status_code == 400 and "sealed" in r.json()["error"]["message"]
            streamed, last = _sse_text((await http.get(f"/v1/streamed_prompts/{sid}/completion")).text)
            assert last["usage"]["completion_tokens"] == 12 and last["usage"]["invalidated_tokens"] > 0
            whole = await http.post("/v1/chat/completions", json={
                "model": "smollm2", "messages": [{"role": "user", "content": QUESTION + final}],
                "max_tokens": 12, "temperature": 0, "ignore_eos": True})
            assert whole.status_code == 200, whole.text
            assert streamed == whole.json()["choices"][0]["message"]["content"]

            assert (await http.get(f"/v1/streamed_prompts/{sid}/completion")).status_code == 404
            r = await http.post("/v1/streamed_prompts", json={"messages": []})
            assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
            r = await http.post("/v1/streamed_prompts", json={"messages": [{"role": "user", "content": ""}]})
            sid2 = r.json()["id"]
            r = await http.post(f"/v1/streamed_prompts/{sid2}/append", json={"text": "x", "token_ids": [1]})
            assert r.status_code == 400 and "exactly one" in r.json()["error"]["message"]
            await http.post(f"/v1/streamed_prompts/{sid2}/append", json={"text": "some context " * 20})
            assert (await http.delete(f"/v1/streamed_prompts/{sid2}")).status_code == 200
            engine.core.check_no_leaks()
            assert not engine.core.seqs
        await engine.close()

    asyncio.run(run())


def test_an_abandoned_streamed_prompt_is_aborted_and_frees_its_blocks(default_model):
    async def run():
        engine = Engine(EngineConfig(num_kv_blocks=128, max_num_batched_tokens=64, enable_prefix_caching=False),
                        hf_model=default_model.hf_model, tokenizer=default_model.tokenizer)
        app = create_app(LocalClient(engine, "smollm2"), model_name="smollm2", streamed_prompt_idle_s=1.0)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            r = await http.post("/v1/streamed_prompts", json={"messages": [{"role": "user", "content": QUESTION}],
                                                              "sampling": SAMPLING})
            sid = r.json()["id"]
            await http.post(f"/v1/streamed_prompts/{sid}/append", json={"text": "The crawler fetches pages " * 20})
            for _ in range(500):  # its chunk is prefilled: it holds blocks
                if engine.core.seqs[sid].num_computed_tokens > 0:
                    break
                await asyncio.sleep(0.01)
            assert engine.stats()["kv_blocks_used"] > 0
            # Opened only now: the wait above may outlast the idle timeout on a busy machine.
            kept = (await http.post("/v1/streamed_prompts", json={
                "messages": [{"role": "user", "content": QUESTION}], "sampling": SAMPLING})).json()["id"]
            for _ in range(8):  # the client of `sid` is gone; `kept`'s client keeps appending
                await asyncio.sleep(0.2)
                assert (await http.post(f"/v1/streamed_prompts/{kept}/append", json={"text": "x"})).status_code == 200
            r = await http.post(f"/v1/streamed_prompts/{sid}/append", json={"text": "late"})
            assert r.status_code == 404 and "idle" in r.json()["error"]["message"]
            assert sid not in engine.core.seqs and kept in engine.core.seqs
            assert (await http.delete(f"/v1/streamed_prompts/{kept}")).status_code == 200
            engine.core.check_no_leaks()
            assert not engine.core.seqs
        await engine.close()

    asyncio.run(run())
