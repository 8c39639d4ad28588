"""``tether bench streaming``: streamed prompts (Stream2LLM) against wait-for-all, in one run.

Open-loop Poisson queries at three rates; each query's context (real text:
passages of a SWE-bench agent trajectory shipped in the package) arrives in
8-32 chunks within a few seconds (``--duration``), as ``append`` (crawler) or
``update`` (re-ranked vector search) schedules (``chunk_arrivals.py``). Arms,
each on a fresh engine over the same weights, one at a time: ``streaming`` opens
the prompt at query arrival and appends / replaces chunks as they come, sealing
at the last one; ``wait`` sends the final prompt whole at the last chunk's
arrival. Then both again at the highest rate with a KV pool of 40% of the
unpressured peak. Each run reports how busy the engine was (its step time over
the run's span): streaming hides prefill in the idle time between arrivals, so
its gain shrinks as that share nears 1.

    tether bench streaming --json [--queries 6] [--rates 0.05,0.1,0.2] [--passage-words 40] [--duration 4,8] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path

from tether.engine.chunk_arrivals import StreamedQuery, corpus_passages, synth_queries
from tether.engine.config import EngineConfig
from tether.engine.cpu_tuning import cpu_info
from tether.engine.engine import Engine
from tether.engine.model_loader import load_model
from tether.engine.request import Request
from tether.engine.sampling import SamplingParams

SYSTEM = "You answer questions about a software project from the retrieved context."
HEADER = "Question: what went wrong in this agent run, and how was it fixed?\nRetrieved context:\n"


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def _messages(content: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]


async def _sleep_until(t: float) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, t - loop.time()))


async def _streamed(engine: Engine, q: StreamedQuery, start: float, sp: SamplingParams, rid: str) -> dict:
    await _sleep_until(start + q.arrival)
    stream = engine.open(Request(request_id=rid, messages=_messages(HEADER), sampling=sp))
    for ev in q.events:
        await _sleep_until(start + q.arrival + ev.time)
        if ev.op == "append":
            await stream.append(ev.content[-1])
        else:
            await stream.replace(HEADER + "".join(ev.content))
    stream.seal()
    outs = [o async for o in stream]
    # The engine's clock and the loop's are both time.monotonic: TTFTs count from the trace's times.
    return _record(outs[-1].metrics, start + q.arrival, start + q.last_chunk)


async def _wait_for_all(engine: Engine, q: StreamedQuery, start: float, sp: SamplingParams, rid: str) -> dict:
    await _sleep_until(start + q.last_chunk)
    content = HEADER + "".join(q.events[-1].content)
    outs = [o async for o in engine.generate(Request(request_id=rid, messages=_messages(content), sampling=sp))]
    return _record(outs[-1].metrics, start + q.arrival, start + q.last_chunk)


def _record(m, t0: float, t_last: float) -> dict:
    return {"ttft_after_last_chunk": m.first_token_time - t_last, "ttft_from_query": m.first_token_time - t0,
            "output_tokens": m.output_tokens, "prompt_tokens": m.prompt_tokens, "start": t0,
            "finished": m.finished_time, "invalidated_tokens": m.invalidated_tokens, "preemptions": m.preemptions}


async def _run_arm(arm: str, loaded, queries: list[StreamedQuery], sp: SamplingParams, blocks: int | None,
                   policy: str = "fcfs", min_chunk: int = 1, budget: int | None = None) -> dict:
    budget = {} if budget is None else {"max_num_batched_tokens": budget}  # None: the engine's default
    engine = Engine(EngineConfig(num_kv_blocks=blocks, queue_policy=policy, stream_min_chunk=min_chunk, **budget),
                    hf_model=loaded.hf_model, tokenizer=loaded.tokenizer)
    peak = 0

    async def watch():
        nonlocal peak
        while True:
            peak = max(peak, engine.core.pool.num_used)  # blocks held (cached free ones are not)
            await asyncio.sleep(0.005)

    watcher = asyncio.get_running_loop().create_task(watch())
    one = _streamed if arm == "streaming" else _wait_for_all
    start = asyncio.get_running_loop().time()
    try:
        recs = await asyncio.gather(*(one(engine, q, start, sp, f"{arm}-{i}") for i, q in enumerate(queries)))
    finally:
        watcher.cancel()
        await engine.close()
    span = max(r["finished"] for r in recs) - min(r["start"] for r in recs)
    tokens = sum(r["output_tokens"] for r in recs)
    a = [r["ttft_after_last_chunk"] for r in recs]
    f = [r["ttft_from_query"] for r in recs]
    return {"ttft_after_last_chunk_p50_s": _pct(a, 0.5), "ttft_after_last_chunk_p99_s": _pct(a, 0.99),
            "ttft_from_query_p50_s": _pct(f, 0.5), "ttft_from_query_p99_s": _pct(f, 0.99),
            "output_tokens": tokens, "span_s": span, "output_tokens_per_s": tokens / span,
            "invalidated_tokens": sum(r["invalidated_tokens"] for r in recs),
            "preemptions": engine.core.scheduler.counters["preemptions"], "peak_kv_blocks": peak,
            "kv_blocks": engine.core.pool.num_blocks, "prompt_tokens_max": max(r["prompt_tokens"] for r in recs),
            "prompt_tokens_mean": statistics.mean(r["prompt_tokens"] for r in recs),
            # How loaded the engine was: its steps' time over the run's span (1.0: never idle).
            "engine_busy_share": engine.core.counters["step_busy_s"] / span}


def _compare(s: dict, w: dict) -> dict:
    return {"ttft_after_last_chunk_speedup": w["ttft_after_last_chunk_p50_s"] / s["ttft_after_last_chunk_p50_s"],
            "throughput_ratio": s["output_tokens_per_s"] / w["output_tokens_per_s"], "streaming": s, "wait": w}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="tether bench streaming")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--queries", type=int, default=6, help="queries per rate and trace kind")
    ap.add_argument("--rates", default="0.05,0.1,0.2",
                    help="query arrival rates (per s), comma-separated; pick them for the machine: on a 2-core CPU "
                         "a 2K-token context takes seconds to prefill, so 0.2/s already keeps the engine busy")
    ap.add_argument("--passage-words", type=int, default=40,
                    help="words per retrieved chunk (40: ~80 tokens of this corpus; 8-32 chunks make 0.6-2.5K-token contexts)")
    ap.add_argument("--duration", default="4,8", help="the last chunk arrives within a time drawn from LO,HI s")
    ap.add_argument("--budget", type=int, help="max_num_batched_tokens of both arms (default: the engine's)")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--pressure", type=float, default=0.4, help="pool size in the pressure run, share of the peak")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-chunk", type=int, default=1,
                    help="prefill an open prompt once this many tokens wait (1, the engine's default: every chunk "
                         "on arrival)")
    ap.add_argument("--queue-policy", default="fcfs", help="both arms' queue policy (fcfs, lcas, mcps, ...)")
    ap.add_argument("--out", type=Path, help="also write result.json here")
    args = ap.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    lo, hi = (float(x) for x in args.duration.split(","))
    loaded = load_model("default")
    text = (Path(__file__).with_name("bench_data") / "agent-trajectories.txt").read_text()
    passages = corpus_passages(text, words=args.passage_words)
    sp = SamplingParams(max_tokens=args.max_tokens, temperature=0, ignore_eos=True)
    arm_opts = dict(policy=args.queue_policy, min_chunk=args.min_chunk, budget=args.budget)

    def queries(kind: str, rate: float) -> list[StreamedQuery]:
        return synth_queries(kind, rate, args.queries, passages, seed=args.seed, duration_s=(lo, hi))

    def log(msg: str) -> None:
        print(f"[bench streaming] {msg}", file=sys.stderr, flush=True)

    async def run() -> dict:
        runs: dict[str, dict] = {}
        await _run_arm("wait", loaded, synth_queries("append", 1.0, 1, passages, seed=99), sp, None)  # warm-up
        for kind in ("append", "update"):
            for rate in rates:
                qs = queries(kind, rate)
                arms = {arm: await _run_arm(arm, loaded, qs, sp, None, **arm_opts) for arm in ("streaming", "wait")}
                r = runs[f"{kind}@{rate:g}"] = _compare(arms["streaming"], arms["wait"])
                log(f"{kind} @ {rate:g}/s: speed-up {r['ttft_after_last_chunk_speedup']:.2f}x, throughput ratio "
                    f"{r['throughput_ratio']:.3f}, engine busy {r['wait']['engine_busy_share']:.0%} (wait-for-all)")
        pressure = {}
        rate = max(rates)
        for kind in ("append", "update"):
            r = runs[f"{kind}@{rate:g}"]
            peak = max(r["streaming"]["peak_kv_blocks"], r["wait"]["peak_kv_blocks"])
            need = -(-(r["wait"]["prompt_tokens_max"] + args.max_tokens) // 16) + 1  # the largest request fits
            blocks = max(int(args.pressure * peak), need)
            arms = {arm: await _run_arm(arm, loaded, queries(kind, rate), sp, blocks, **arm_opts)
                    for arm in ("streaming", "wait")}
            c = _compare(arms["streaming"], arms["wait"])
            c.update(unpressured_peak_kv_blocks=peak, kv_blocks=blocks,
                     p99_after_last_chunk_no_worse=arms["streaming"]["ttft_after_last_chunk_p99_s"]
                     <= arms["wait"]["ttft_after_last_chunk_p99_s"])
            pressure[f"{kind}@{rate:g}"] = c
            log(f"pressure {kind} ({blocks} of peak {peak} blocks): p99 after last chunk "
                f"{arms['streaming']['ttft_after_last_chunk_p99_s']:.3f} s streamed vs "
                f"{arms['wait']['ttft_after_last_chunk_p99_s']:.3f} s wait, preemptions "
                f"{arms['streaming']['preemptions']} / {arms['wait']['preemptions']}")
        return {"runs": runs, "memory_pressure": pressure}

    res = asyncio.run(run())
    runs = res["runs"].values()
    s50 = statistics.median(r["streaming"]["ttft_after_last_chunk_p50_s"] for r in runs)
    w50 = statistics.median(r["wait"]["ttft_after_last_chunk_p50_s"] for r in runs)
    result = {"benchmark": "streaming-prefill", **cpu_info(), "model": "SmolLM2-135M-Instruct",
              "queries_per_run": args.queries, "queue_policy": args.queue_policy, "min_chunk": args.min_chunk,
              "rates_per_s": rates, "passage_words": args.passage_words, "duration_s": [lo, hi],
              "budget": args.budget, "max_tokens": args.max_tokens,
              "ttft_after_last_chunk_speedup": w50 / s50,
              "throughput_ratio": sum(r["streaming"]["output_tokens_per_s"] for r in runs)
              / sum(r["wait"]["output_tokens_per_s"] for r in runs),
              **res}
    out = json.dumps(result, indent=2)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "result.json").write_text(out + "\n")
    print(out if args.json else f"TTFT after last chunk: {result['ttft_after_last_chunk_speedup']:.2f}x lower "
          f"streamed; throughput ratio {result['throughput_ratio']:.3f} (CPU: {result['cpu_model']})")
    return result


if __name__ == "__main__":
    main()
