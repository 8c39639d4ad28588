"""The smallest agent: one LLM call inside a program on the embedded Ray cluster.

    python examples/hello_agent.py
    tether run examples/hello_agent.py:hello --input "Say hi to a new engineer"
"""

from tether.agents import Context, Runtime


async def hello(ctx: Context, input: str = "Say hello in five words.") -> str:
    reply = await ctx.chat([{"role": "user", "content": input}], max_tokens=24, temperature=0)
    return reply.text


if __name__ == "__main__":
    with Runtime() as rt:
        print(rt.run(hello, input="Say hello in five words."))
