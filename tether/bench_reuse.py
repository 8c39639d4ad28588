"""``tether bench reuse``: cross-agent KV reuse against dense prefill.

The five-agent measurement is ``tether.engine.bench_reuse``. This module adds a
multi-agent chain through the SDK, with reuse on and off side by side:
planner -> three solvers -> aggregator, on word problems written for tether's tests
(GSM8K-style). Every solver reads the problem and the plan; the aggregator reads
them and every solution: the text another agent produced or read reaches each
downstream prompt at a new position, which is what reuse serves.

    tether bench reuse --chain --json
"""

from __future__ import annotations

import re
import time
from typing import Any

from tether.agents import Agent, Context, Runtime

PROBLEMS = [
    ("A baker makes 24 rolls in the morning and 18 in the afternoon. She sells 30. How many rolls are left?", 12),
    ("Tom has 5 boxes with 8 pencils in each box. He gives away 13 pencils. How many pencils does he keep?", 27),
    ("A train travels 60 miles each hour for 3 hours, then 40 miles in the next hour. How far does it go?", 220),
    ("Mia reads 15 pages a day for 6 days and 10 pages on the seventh day. How many pages does she read?", 100),
    ("A farmer has 7 rows of 9 apple trees. A storm knocks down 8 trees. How many trees still stand?", 55),
    ("Sam saves 12 dollars a week for 5 weeks and spends 25 dollars on a game. How much money is left?", 35),
]

planner = Agent("planner", "You plan how to solve a math word problem. Restate the facts, then list the steps "
                "to compute the answer. Do not compute the final number.", max_tokens=96, temperature=0)
solvers = [Agent(f"solver-{i + 1}", f"You are solver {i + 1}. Follow the plan and compute the answer step by "
                 f"step{style}. End with 'Answer: <number>'.", max_tokens=96, temperature=0)
           for i, style in enumerate(["", ", checking each multiplication", ", writing each intermediate total"])]
aggregator = Agent("aggregator", "You read several solutions to one problem and give the final answer they "
                   "support best. End with 'Answer: <number>'.", max_tokens=48, temperature=0)


async def team(ctx: Context, input: str) -> dict[str, Any]:
    """One problem through the chain; returns every agent's text."""
    plan = await ctx.run(planner, input=input)
    solutions = [await ctx.run(s, input=f"Problem:\n{input}\n\nPlan:\n{plan}") for s in solvers]
    shown = "\n\n".join(f"Solution {i + 1}:\n{s}" for i, s in enumerate(solutions))
    final = await ctx.run(aggregator, input=f"Problem:\n{input}\n\nPlan:\n{plan}\n\n{shown}")
    return {"plan": plan, "solutions": solutions, "final": final}


def answer_of(text: str) -> int | None:
    """The number after the last 'Answer:' (or the last number) in ``text``."""
    m = re.findall(r"Answer:\s*\$?(-?\d+)", text) or re.findall(r"-?\d+", text)
    return int(m[-1]) if m else None


def run_side_by_side(problems: list[tuple[str, int]] = PROBLEMS, model: str = "default") -> dict[str, Any]:
    """Every problem through the chain with reuse off, then on (each on a fresh runtime)."""
    arms: dict[str, Any] = {}
    for reuse in ("off", "recompute"):
        with Runtime(model=model, engine={"reuse": reuse}) as rt:
            rows = []
            for question, expected in problems:
                t0 = time.perf_counter()
                out = rt.run(team, input=question)
                rows.append({"problem": question, "expected": expected, "got": answer_of(out["final"]),
                             "final": out["final"], "seconds": time.perf_counter() - t0})
            stats = rt.stats()
        arms[reuse] = {"rows": rows, "seconds": sum(r["seconds"] for r in rows),
                       "correct": sum(r["got"] == r["expected"] for r in rows),
                       "reused_tokens": _total(stats, "reuse_placed_tokens"),
                       "prefix_hit_tokens": _total(stats, "prefix_hit_tokens")}
    arms["same_final_answers"] = sum(a["got"] == b["got"] for a, b in zip(arms["off"]["rows"],
                                                                         arms["recompute"]["rows"]))
    arms["speedup"] = arms["off"]["seconds"] / arms["recompute"]["seconds"]
    return arms


def _total(stats: dict[str, Any], key: str) -> int:
    if key in stats:
        return int(stats[key])
    return sum(int(r.get(key, 0)) for r in stats.get("replicas", []) if isinstance(r, dict))


def _plot(report: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for rule, r in report["rules"].items():
        layers = r["layer_deviation"]
        if layers:
            ax.plot([x["layer"] for x in layers], [x["k"] for x in layers], marker="o", ms=3, label=f"{rule}: K")
            ax.plot([x["layer"] for x in layers], [x["v"] for x in layers], marker="s", ms=3, ls="--",
                    label=f"{rule}: V")
    ax.set_xlabel("layer")
    ax.set_ylabel("1 - cos(placed, dense)")
    ax.set_title(f"Placed tokens' KV deviation from dense prefill ({report['cpu']['cpu_model']})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    """``tether bench reuse [--json] [--out DIR] [--queries N] [--chain]``."""
    import argparse
    import json
    from pathlib import Path

    from tether.engine import bench_reuse

    p = argparse.ArgumentParser(prog="tether bench reuse")
    p.add_argument("--queries", type=int, default=2, help="measured queries (after one warm-up)")
    p.add_argument("--answer-tokens", type=int, default=128)
    p.add_argument("--chain", action="store_true", help="also run the SDK chain (planner -> solvers -> "
                   "aggregator) with reuse off and on")
    p.add_argument("--chain-problems", type=int, default=3, help="word problems the chain solves per arm")
    p.add_argument("--out", type=Path, help="write reuse.json and the per-layer deviation plot here")
    p.add_argument("--json", action="store_true")
    p.add_argument("--verbose", action="store_true", help="a line per request on stderr")
    args = p.parse_args(argv)
    report = bench_reuse.run(queries=args.queries, answer_tokens=args.answer_tokens, verbose=args.verbose)
    if args.chain:
        report["sdk_chain"] = run_side_by_side(PROBLEMS[:args.chain_problems])
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "reuse.json").write_text(json.dumps(report, indent=2))
        _plot(report, args.out / "kv-deviation-per-layer.png")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"cpu: {report['cpu']['cpu_model']} ({report['cpu']['cpu_capability']})")
        for rule, r in report["rules"].items():
            print(f"{rule:>10}: ttft_speedup last agent {r['ttft_speedup']['last_agent']:.2f}x, mean "
                  f"{r['ttft_speedup']['mean']:.2f}x; reuse_rate {r['reuse_rate']:.2f}; greedy_agreement "
                  f"{r['greedy_agreement']:.2f}; top-1 {r['top1_agreement']:.2f}; KL {r['kl_mean']:.4f}")
    return report
