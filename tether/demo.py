"""``tether demo``: a small multi-agent workflow on the embedded Ray cluster, which checks its own results.

For each task, a program runs three agents: a planner, a coder that writes a
script (decoded under a grammar: one Python code block that ends by printing)
and commits and runs it with the shell tool in a temporary git repository (and
on an error gets the output back and one more try), and a reviewer whose
verdict is a validated pydantic object (``output_type``).
Each program then checks its result: the script ran and printed exactly what
the task asked. Several programs run at once on one engine replica, under the
scheduling policy preset ``policy`` (``tether demo --policy``; default
``tether``). Then the conversations, pass/fail per program, a table per agent,
and what the engine did: policy, pins set and hit, prefix-cache and reused tokens.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from tether.agents import Agent, Context, Runtime
from tether.agents.builtin_tools import make_shell_tool
from tether.engine.guided import Guided
from tether.runtime.chat_format import ToolCall


@dataclass(frozen=True)
class Task:
    """A job a 135M model can do, with the exact output that shows it was done."""

    filename: str
    text: str
    expected: str


TASKS = [
    Task("reverse.py", "Print the word 'tether' reversed.", "rehtet"),
    Task("total.py", "Print the sum of the numbers 1 to 10.", "55"),
    Task("vowels.py", "Count the vowels in the sentence 'agents call tools' and print the count.", "5"),
]

# The coder's reply: one ```python block of at most seven lines whose last line prints (a small model
# otherwise often defines a function and never calls it, or writes prose).
CODE_BLOCK = Guided(regex=r"```python\n([^`\n][^\n]*\n){0,6}print\([^\n]*\)\n```")


class Review(BaseModel):
    verdict: Literal["correct", "incorrect"]
    reason: str = Field(max_length=100)


planner = Agent("planner", "You plan small programming tasks. Answer with a numbered list of at most three "
                "short steps.", max_tokens=48, temperature=0)
reviewer = Agent("reviewer", "You review a Python script and its output against the task.", output_type=Review,
                 max_tokens=64, max_turns=2, temperature=0)


def _code_of(text: str) -> str:
    """The first fenced code block, else the text itself."""
    m = re.search(r"```(?:python)?\n(.*?)(?:```|$)", text, re.S)
    return (m.group(1) if m else text).strip()


def _run_result(text: str) -> tuple[str, int | None]:
    """A shell tool result split into the command's output and its exit code (None: timed out)."""
    m = re.search(r"\[exit code (-?\d+)\]\s*$", text)
    if m is None:
        return text.rsplit("\n[timed out", 1)[0], None
    return text[:m.start()].rstrip("\n"), int(m.group(1))


async def coder(ctx: Context, task: Task, repo: str, attempts: int = 2) -> dict:
    """Asks the model for a script, commits and runs it with the shell tool; on an error, shows the model
    the output and asks once more. (The planner's steps are not in its prompt: a 135M model given them
    copies their words into the script.)"""
    shell = make_shell_tool(repo, timeout_s=20)
    messages = [{"role": "system", "content": "You write short Python 3 scripts. Reply with one ```python code block."},
                {"role": "user", "content": f"Task: {task.text}"}]
    for attempt in range(attempts):
        reply = await ctx.chat(messages, max_tokens=120, temperature=0, guided=CODE_BLOCK)
        code = _code_of(reply.text)
        command = (f"cat > {task.filename} <<'TETHER_EOF'\n{code}\nTETHER_EOF\n"
                   f"git add {task.filename} && git commit -qm 'add {task.filename}' && timeout 10 python3 {task.filename}")
        [result] = await ctx.call_tools([ToolCall("shell", {"command": command})], tools=[shell])
        output, exit_code = _run_result(result.content)
        if exit_code == 0 and output.strip():
            break
        messages += [{"role": "assistant", "content": reply.text},
                     {"role": "user", "content": f"Running it gave:\n{result.content}\nFix the script."}]
    return {"code": code, "output": output, "exit_code": exit_code, "attempts": attempt + 1}


async def workflow(ctx: Context, task: Task, repo: str) -> dict:
    plan = await ctx.run(planner, input=task.text)
    run = await ctx.run(coder, task=task, repo=repo)
    review = await ctx.run(reviewer, input=f"Task: {task.text}\nPlan:\n{plan}\nScript:\n```python\n{run['code']}\n```\n"
                                           f"Output: {run['output']}")
    # The program's own check: the script ran and printed exactly what the task asked.
    passed = run["exit_code"] == 0 and run["output"].strip() == task.expected
    return {"plan": plan, **run, "review": review.model_dump(), "passed": passed}


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


def _short(text: str, limit: int = 30) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _indent(text: str, limit: int = 400) -> str:
    text = text.strip()
    text = text if len(text) <= limit else text[:limit] + " ..."
    return "\n".join("      " + ln for ln in text.splitlines())


def main(model: str = "default", policy: str | None = None) -> int:
    """Run the demo; ``policy`` names the engine's scheduling preset (None: the default, ``tether``).

    Returns 0 when every program ran and most passed their own checks, else 1.
    """
    repo = _init_repo()
    t0 = time.perf_counter()
    with Runtime(model=model, policy=policy) as rt:
        policy = rt.policy
        print(f"runtime up in {time.perf_counter() - t0:.1f}s: 1 engine replica ({model}, policy {policy}), "
              f"tool executors, program actors on a local Ray cluster; repo {repo}\n")
        start = time.perf_counter()
        handles = [rt.submit(workflow, task=task, repo=repo) for task in TASKS]
        outcomes = [h.outcome() for h in handles]
        wall = time.perf_counter() - start
        stats = rt.stats()
    totals: dict[str, dict[str, float]] = {}
    checks = []
    for task, res in zip(TASKS, outcomes):
        print(f"=== program {res.program_id}: {task.text}")
        if not res.ok:
            print(f"    FAILED: {res.error}\n")
            checks.append([task.filename, task.expected, "-", "error", "-"])
            continue
        for agent, role, text in res.value.transcript:
            print(f"  [{agent}] {role}:\n{_indent(text)}")
        print()
        for agent, st in res.value.agents.items():
            acc = totals.setdefault(agent, {})
            for k, v in st.items():
                acc[k] = acc.get(k, 0) + v
        v = res.value.value
        got = v["output"].strip() if v["exit_code"] == 0 else f"exit {v['exit_code']}"
        checks.append([task.filename, task.expected, _short(got), "PASS" if v["passed"] else "FAIL",
                       v["review"]["verdict"]])
    passed = sum(c[3] == "PASS" for c in checks)
    print(_table(["program", "expected output", "got", "check", "reviewer says"], checks))
    rows = [[a, int(s["turns"]), int(s["tool_calls"]), int(s["prompt_tokens"]), int(s["cached_tokens"]),
             int(s["output_tokens"]), f"{s['llm_time_s']:.1f}s", f"{s['tool_time_s']:.2f}s"]
            for a, s in totals.items() if s["turns"] or s["tool_calls"]]
    print(_table(["agent", "turns", "tool calls", "prompt tok", "cached tok", "output tok", "time in LLM",
                  "time in tools"], rows))
    stat = lambda k: stats.get(k) or 0  # noqa: E731 (a dead replica reports nothing)
    hit = stat("prefix_hit_tokens") / max(1, stat("prompt_tokens"))
    print(_table(["engine", "value"], [
        ["policy", policy],
        ["programs passed", f"{passed} / {len(TASKS)} (ran: {sum(r.ok for r in outcomes)})"],
        ["wall time", f"{wall:.1f}s"],
        ["prompt tokens", stat("prompt_tokens")], ["generated tokens", stat("generated_tokens")],
        ["prefix hit tokens", f"{stat('prefix_hit_tokens')} ({hit:.0%})"],
        # Pins hold a program's KV across its tool calls; a hit is a turn that found its KV still there.
        ["pins set / hit", f"{stat('pins')} / {stat('pin_hits')} ({stat('pin_hit_tokens')} tokens)"],
        ["reused KV tokens", f"{stat('reuse_placed_tokens')} (cross-agent reuse: {stats.get('reuse', 'off')})"],
        ["TTFT p50", f"{stat('ttft_p50') * 1000:.0f} ms"],
        ["tokens/s", f"{stat('generated_tokens') / wall:.1f}"]]))
    print(f"\ngit log of {repo}:")
    print(subprocess.run(["git", "log", "--oneline"], cwd=repo, capture_output=True, text=True).stdout)
    from tether.runtime.tracing.spans import where_note
    note = where_note()  # None unless tracing is on (`tether demo` traces unless --no-trace)
    if note:
        print(note)
    return 0 if all(r.ok for r in outcomes) and 2 * passed > len(TASKS) else 1
