"""A pipeline of agents: a writer drafts, an editor tightens; several programs at once.

    python examples/multi_agent.py
"""

from tether.agents import Agent, Context, Runtime

writer = Agent("writer", "You write one short paragraph on the topic you are given.", max_tokens=48,
               temperature=0)
editor = Agent("editor", "You shorten the text you are given to one sentence.", max_tokens=32, temperature=0)


async def pipeline(ctx: Context, input: str) -> dict:
    draft = await ctx.run(writer, input=input)
    final = await ctx.run(editor, input=draft)
    return {"topic": input, "draft": draft, "final": final}


if __name__ == "__main__":
    topics = ["tool calls", "KV caches", "job completion time"]
    with Runtime() as rt:
        handles = [rt.submit(pipeline, input=t) for t in topics]
        for h in handles:
            out = h.result()
            print(f"{out['topic']}: {out['final']}")
