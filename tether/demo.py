"""``tether demo``: the default model answering chats through the engine.

Several chats run concurrently (continuous batching); one answer streams to
the terminal as it is generated; a second round reuses the shared system
prompt from the prefix cache. Then a table of engine stats.
"""

from __future__ import annotations

import asyncio
import time

from tether.engine import Engine, EngineConfig, Request, SamplingParams

SYSTEM = ("You are a concise assistant inside tether, a runtime for agent programs. "
          "Answer in one or two sentences.")
QUESTIONS = [
    "What is a KV cache in a language model?",
    "Name three prime numbers.",
    "Why do agents call tools?",
    "What does FCFS stand for?",
    "Give a one-line tip for writing tests.",
]


def _chat(q: str, max_tokens: int = 48) -> Request:
    return Request(messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
                   sampling=SamplingParams(max_tokens=max_tokens, temperature=0))


async def _collect(engine: Engine, req: Request, stream: bool = False) -> tuple[str, object]:
    text, metrics = [], None
    async for out in engine.generate(req):
        text.append(out.text)
        if stream:
            print(out.text, end="", flush=True)
        if out.finished:
            metrics = out.metrics
    return "".join(text), metrics


def _table(rows: list[tuple[str, str]]) -> str:
    w = max(len(k) for k, _ in rows)
    line = "+" + "-" * (w + 2) + "+" + "-" * 16 + "+"
    body = [f"| {k:<{w}} | {v:>14} |" for k, v in rows]
    return "\n".join([line, *body, line])


async def _main(model: str) -> int:
    t0 = time.perf_counter()
    engine = Engine(EngineConfig(model=model))
    print(f"loaded {model!r} from {engine.model_path} in {time.perf_counter() - t0:.1f}s\n")

    print(f"[streaming] Q: {QUESTIONS[0]}\nA: ", end="")
    start = time.perf_counter()
    jobs = [_collect(engine, _chat(QUESTIONS[0]), stream=True)] + [_collect(engine, _chat(q)) for q in QUESTIONS[1:]]
    results = await asyncio.gather(*jobs)
    wall = time.perf_counter() - start
    print("\n")
    for q, (a, m) in zip(QUESTIONS[1:], results[1:]):
        print(f"Q: {q}\nA: {a.strip()}\n   (ttft {m.ttft * 1000:.0f} ms, prefix hit {m.prefix_hit_tokens} tokens)\n")

    # A second round: the system prompt's blocks are already cached.
    again = await _collect(engine, _chat("Say hello to the new engineer.", 24))
    print(f"Q: Say hello to the new engineer.\nA: {again[0].strip()}\n"
          f"   (prefix hit {again[1].prefix_hit_tokens} of {again[1].prompt_tokens} prompt tokens)\n")

    s = engine.stats()
    out_tokens = sum(m.output_tokens for _, m in results)
    ttfts = sorted(m.ttft for _, m in results)
    print(_table([
        ("requests", str(s["finished"])),
        ("prompt tokens", str(s["prompt_tokens"])),
        ("generated tokens", str(s["generated_tokens"])),
        ("prefix hit tokens", str(s["prefix_hit_tokens"])),
        ("prefix hit rate", f"{s['prefix_hit_rate']:.1%}"),
        ("TTFT p50 (first round)", f"{ttfts[len(ttfts) // 2] * 1000:.0f} ms"),
        ("tokens/s (first round)", f"{out_tokens / wall:.1f}"),
        ("engine steps", str(s["steps"])),
        ("KV blocks used / total", f"{s['kv_blocks_used']} / {s['kv_blocks_total']}"),
    ]))
    await engine.close()
    return 0


def main(model: str = "default") -> int:
    return asyncio.run(_main(model))
