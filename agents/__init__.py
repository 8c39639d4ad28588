"""tether.agents: the SDK for writing agents (tools, agents, context, messages, handoffs).

    from tether.agents import Agent, Runtime, tool

    @tool
    def add(a: int, b: int) -> int:
        "Add two numbers."
        return a + b

    with Runtime() as rt:
        print(rt.run(Agent("calc", "Use tools.", tools=[add]), input="2+3?"))
"""

from tether.agents.agent import Agent
from tether.agents.context import AgentStats, Context
from tether.agents.messages import Message, Reply, Usage
from tether.agents.runtime import ProgramFailed, ProgramHandle, ProgramOutput, Runtime
from tether.agents.tools import Tool, tool

__all__ = ["Agent", "AgentStats", "Context", "Message", "ProgramFailed", "ProgramHandle", "ProgramOutput",
           "Reply", "Runtime", "Tool", "Usage", "tool"]
