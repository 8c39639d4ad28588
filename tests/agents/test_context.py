"""``Context`` against a recording fake LLM client and tool pool (no engine, no Ray)."""

from __future__ import annotations

from tether.agents import Agent, Context, tool
from tether.engine import RequestMetrics, RequestOutput
from tether.runtime.chat_format import ToolCall
from tether.runtime.program import ProgramServices
from tether.runtime.tool_executor import ToolResult


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class _Recorder:
    """The LLM client and the tool pool of one program, logging every call in order."""

    def __init__(self):
        self.log: list[tuple] = []
        self.requests = []

    async def complete(self, request):
        self.requests.append(request)
        self.log.append(("complete", request.is_last_turn))
        return [RequestOutput(request.request_id, [7], "done", finished=True, finish_reason="stop",
                              metrics=RequestMetrics(0.0, prompt_tokens=3, output_tokens=1))]

    async def tool_hint(self, program_id, tool_names):
        self.log.append(("hint", program_id, list(tool_names)))

    async def run(self, tool, arguments, timeout_s=None):  # the tool pool
        self.log.append(("tool", tool.name))
        return ToolResult(tool.name, str(await tool.invoke(arguments)), False, 0.0)


def _context() -> tuple[Context, _Recorder]:
    rec = _Recorder()
    return Context(ProgramServices("prog-1", rec, rec), "main"), rec


async def test_tool_hint_reaches_the_engine_before_the_tools_run():
    ctx, rec = _context()
    results = await ctx.call_tools([ToolCall("add", {"a": 2, "b": 3})], tools=[add])
    assert [m.content for m in results] == ["5"]
    assert rec.log == [("hint", "prog-1", ["add"]), ("tool", "add")]


async def test_a_shell_call_is_hinted_by_its_commands_program():
    """The SDK keys calls as the engine and the server do (``tether.engine.tool_key``)."""
    ctx, rec = _context()

    @tool
    def shell(command: str) -> str:
        """Run a shell command."""
        return "ok"

    calls = [ToolCall("shell", {"command": "cd /repo && FOO=1 pytest -q"}), ToolCall("add", {"a": 1, "b": 2})]
    await ctx.call_tools(calls, tools=[shell, add])
    assert rec.log[0] == ("hint", "prog-1", ["pytest", "add"])


async def test_a_sub_agents_last_turn_does_not_end_the_parent_program():
    ctx, rec = _context()
    helper = Agent("helper", "Answer briefly.", max_turns=1)
    assert await ctx.run(helper, input="hi") == "done"
    assert await helper(ctx, input="hi") == "done"  # the program's own agent: its last turn is the program's
    assert [r.is_last_turn for r in rec.requests] == [False, True]
    assert {r.program_id for r in rec.requests} == {"prog-1"}
