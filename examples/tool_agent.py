"""An agent with tools: the model may call them; the agent can also call them directly.

    python examples/tool_agent.py
"""

import tempfile

from tether.agents import Agent, Context, Runtime, tool
from tether.agents.builtin_tools import make_shell_tool
from tether.runtime.chat_format import ToolCall


@tool
def word_count(text: str) -> int:
    """Count the words in a text.

    Args:
        text: the text to count.
    """
    return len(text.split())


assistant = Agent("assistant", "You are a helpful assistant. Use a tool when it helps.",
                  tools=[word_count], max_turns=3, max_tokens=48, temperature=0)


async def inspector(ctx: Context, input: str, workdir: str) -> dict:
    """Runs the tool-using agent, then lists the working directory with the shell tool."""
    answer = await ctx.run(assistant, input=input)
    shell = make_shell_tool(workdir, timeout_s=10)
    [listing] = await ctx.call_tools([ToolCall("shell", {"command": "echo hi > note.txt && ls"})], tools=[shell])
    return {"answer": answer, "listing": listing.content}


if __name__ == "__main__":
    with Runtime() as rt:
        out = rt.run(inspector, input="How many words are in 'agents call tools'?",
                     workdir=tempfile.mkdtemp())
        print(out["answer"])
        print(out["listing"])
