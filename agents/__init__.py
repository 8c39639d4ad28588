"""tether.agents: the SDK for writing agents (tools, agents, context, messages, handoffs)."""
