"""tether.engine: one inference replica (model, paged KV cache, scheduler, runner, sampler, async API).

    from tether.engine import Engine, EngineConfig, Request, SamplingParams

    engine = Engine(EngineConfig(model="default"))
    async for out in engine.generate(Request(messages=[{"role": "user", "content": "Hi"}])):
        print(out.text, end="")
"""

from tether.engine.config import EngineConfig
from tether.engine.core import EngineCore, RequestRejected
from tether.engine.engine import Engine, EngineError, build_core
from tether.engine.events import EngineEvent
from tether.engine.model_loader import ModelNotFoundError
from tether.engine.request import Request, RequestMetrics, RequestOutput
from tether.engine.sampling import SamplingParams

__all__ = ["Engine", "EngineConfig", "EngineCore", "EngineError", "EngineEvent", "ModelNotFoundError",
           "Request", "RequestMetrics", "RequestOutput", "RequestRejected", "SamplingParams", "build_core"]
