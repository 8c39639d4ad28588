"""The ``traceparent`` in tether's own actor call envelope: a tool executor actor (another process)
writes its span under the caller's ``execute_tool`` span, into the same run folder."""

from __future__ import annotations

import ray

from tether.agents import tool
from tether.runtime import tracing
from tether.runtime.tool_executor import ToolExecutorPool
from tether.runtime.tracing.genai import tool_span
from tether.runtime.tracing.spans import ENV_RUN_DIR
from tether.runtime.tracing.store import read_run


@tool
def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


async def test_a_tool_actor_continues_the_callers_trace(tmp_path):
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    run_dir = tracing.enable(tmp_path, kind="actors", export_env=False)
    # the actor gets the settings through its environment, as the runtime's actors do
    pool = ToolExecutorPool(1, actor_options={"runtime_env": {"env_vars": {ENV_RUN_DIR: str(run_dir)}}})
    try:
        with tool_span("shout", "call-1", "shout", "main", "prog-9") as caller:
            res = await pool.run(shout, {"text": "hi"})
        assert res.content == "HI" and not res.is_error
    finally:
        pool.shutdown()
        tracing.disable()
        if started:
            ray.shutdown()
    spans = read_run(run_dir)
    [remote] = [s for s in spans if s.name == "tether.tool.run shout"]
    ctx = caller.get_span_context()
    assert remote.trace_id == f"{ctx.trace_id:032x}" and remote.parent_id == f"{ctx.span_id:016x}"
    assert remote.resource["service.name"] == "tether.tools" and remote.attributes["tether.tool.is_error"] is False
    local = next(s for s in spans if s.name == "execute_tool shout")
    assert remote.resource["process.pid"] != local.resource["process.pid"]  # written by the actor's process
