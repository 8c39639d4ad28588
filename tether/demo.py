"""``tether demo``: a small multi-agent workflow on the embedded Ray cluster.

For each task, a program runs three agents: a planner, a coder that writes a
script with the shell tool in a temporary git repository and runs it, and a
reviewer. Several programs run at once on one engine replica, under the
scheduling policy preset ``policy`` (``tether demo --policy``; default ``tether``).
Then the conversations, a table per agent, and the engine's stats with the policy.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from pathlib import Path

from tether.agents import Agent, Context, Runtime
from tether.agents.builtin_tools import make_shell_tool
from tether.runtime.chat_format import ToolCall

TASKS = [
    ("squares.py", "Print the squares of the numbers 1 to 5."),
    ("reverse.py", "Print the word 'tether' reversed."),
    ("vowels.py", "Count the vowels in the sentence 'agents call tools' and print the count."),
]

planner = Agent("planner", "You plan small programming tasks. Answer with a numbered list of at most three "
                "short steps.", max_tokens=48, temperature=0)
reviewer = Agent("reviewer", "You review Python code. Answer in one or two sentences.", max_tokens=40,
                 temperature=0)


def _code_of(text: str) -> str:
    """The first fenced code block, else the text itself."""
    m = re.search(r"```(?:python)?\n(.*?)(?:```|$)", text, re.S)
    return (m.group(1) if m else text).strip()


async def coder(ctx: Context, task: str, plan: str, repo: str, filename: str) -> str:
    """Asks the model for a script, then commits and runs it with the shell tool."""
    reply = await ctx.chat([
        {"role": "system", "content": "You write short Python 3 scripts. Reply with one ```python code block."},
        {"role": "user", "content": f"Task: {task}\nPlan:\n{plan}"}], max_tokens=96, temperature=0)
    code = _code_of(reply.text)
    shell = make_shell_tool(repo, timeout_s=20)
    command = (f"cat > {filename} <<'TETHER_EOF'\n{code}\nTETHER_EOF\n"
               f"git add {filename} && git commit -qm 'add {filename}' && timeout 10 python3 {filename}")
    [result] = await ctx.call_tools([ToolCall("shell", {"command": command})], tools=[shell])
    return f"```python\n{code}\n```\nRun:\n{result.content}"


async def workflow(ctx: Context, task: str, filename: str, repo: str) -> dict:
    plan = await ctx.run(planner, input=task)
    code = await ctx.run(coder, task=task, plan=plan, repo=repo, filename=filename)
    review = await ctx.run(reviewer, input=f"Task: {task}\n{code}")
    return {"plan": plan, "code": code, "review": review}


def _init_repo() -> str:
    repo = tempfile.mkdtemp(prefix="tether-demo-")
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "demo@tether"],
                ["git", "config", "user.name", "tether demo"]):
        subprocess.run(cmd, cwd=repo, check=True)
    return repo


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    fmt = lambda r: "| " + " | ".join(str(c).rjust(w) if j else str(c).ljust(w)  # noqa: E731
                                      for j, (c, w) in enumerate(zip(r, widths))) + " |"
    return "\n".join([line, fmt(header), line, *map(fmt, rows), line])


def _indent(text: str, limit: int = 400) -> str:
    text = text.strip()
    text = text if len(text) <= limit else text[:limit] + " ..."
    return "\n".join("      " + ln for ln in text.splitlines())


def main(model: str = "default", policy: str | None = None) -> int:
    """Run the demo; ``policy`` names the engine's scheduling preset (None: the default, ``tether``)."""
    repo = _init_repo()
    t0 = time.perf_counter()
    with Runtime(model=model, policy=policy) as rt:
        policy = rt.policy
        print(f"runtime up in {time.perf_counter() - t0:.1f}s: 1 engine replica ({model}, policy {policy}), "
              f"tool executors, program actors on a local Ray cluster; repo {repo}\n")
        start = time.perf_counter()
        handles = [rt.submit(workflow, task=task, filename=fn, repo=repo) for fn, task in TASKS]
        outcomes = [h.outcome() for h in handles]
        wall = time.perf_counter() - start
        stats = rt.stats()
    totals: dict[str, dict[str, float]] = {}
    for (fn, task), res in zip(TASKS, outcomes):
        print(f"=== program {res.program_id}: {task}")
        if not res.ok:
            print(f"    FAILED: {res.error}\n")
            continue
        for agent, role, text in res.value.transcript:
            print(f"  [{agent}] {role}:\n{_indent(text)}")
        print()
        for agent, st in res.value.agents.items():
            acc = totals.setdefault(agent, {})
            for k, v in st.items():
                acc[k] = acc.get(k, 0) + v
    rows = [[a, int(s["turns"]), int(s["tool_calls"]), int(s["prompt_tokens"]), int(s["cached_tokens"]),
             int(s["output_tokens"]), f"{s['llm_time_s']:.1f}s", f"{s['tool_time_s']:.2f}s"]
            for a, s in totals.items() if s["turns"] or s["tool_calls"]]
    print(_table(["agent", "turns", "tool calls", "prompt tok", "cached tok", "output tok", "time in LLM",
                  "time in tools"], rows))
    hit = stats["prefix_hit_tokens"] / max(1, stats["prompt_tokens"])
    print(_table(["engine", "value"], [
        ["policy", policy],
        ["programs", f"{sum(r.ok for r in outcomes)} ok / {len(outcomes)}"],
        ["wall time", f"{wall:.1f}s"],
        ["prompt tokens", stats["prompt_tokens"]], ["generated tokens", stats["generated_tokens"]],
        ["prefix hit tokens", f"{stats['prefix_hit_tokens']} ({hit:.0%})"],
        ["TTFT p50", f"{(stats['ttft_p50'] or 0) * 1000:.0f} ms"],
        ["tokens/s", f"{stats['generated_tokens'] / wall:.1f}"]]))
    print(f"\ngit log of {repo}:")
    print(subprocess.run(["git", "log", "--oneline"], cwd=repo, capture_output=True, text=True).stdout)
    return 0 if all(r.ok for r in outcomes) else 1
