"""Engine configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EngineConfig(BaseModel):
    """Everything that shapes one engine replica.

    Example::

        EngineConfig(model="default", num_kv_blocks=2048, max_num_batched_tokens=512)

    ``num_kv_blocks=None`` sizes the pool from ``kv_cache_memory_gb``.
    ``queue_policy`` orders waiting requests: ``fcfs`` (request arrival) or
    ``program-fcfs`` (a request inherits its program's first arrival; a program
    whose KV is pinned goes first). ``pin_policy`` decides how long a program's
    KV stays pinned when its turn ends in tool calls (see ``ttl_policy.py``).
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = "default"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "cpu"
    block_size: int = Field(default=16, ge=1)
    num_kv_blocks: int | None = Field(default=None, ge=1)
    kv_cache_memory_gb: float = Field(default=1.0, gt=0)
    max_num_batched_tokens: int = Field(default=512, ge=1, description="per-step token budget")
    max_num_seqs: int = Field(default=64, ge=1)
    max_model_len: int | None = Field(default=None, ge=1, description="default: the model's own")
    enable_prefix_caching: bool = True
    host_kv_blocks: int = Field(default=0, ge=0, description="host-memory tier size in blocks (0: off)")
    queue_policy: Literal["fcfs", "program-fcfs"] = "fcfs"
    eviction_policy: Literal["lru"] = "lru"
    pin_policy: Literal["none", "continuum-fixed", "cost-benefit"] = "none"
    max_pin_share: float = Field(default=0.5, gt=0, le=1, description="most of the pool pins may hold")
    starvation_s: float = Field(default=60.0, gt=0, description="a request waiting longer goes first")
    starvation_turns: float | None = Field(default=None, gt=0, description="if set, the starvation bound is this "
                                           "many recent turn service times instead (scales with the engine's speed)")
    pins_yield_to: Literal["any", "starved"] = Field(default="any", description="which waiting requests may end "
                                                     "pins to get blocks: any (vLLM/Continuum) or only starved ones")
    admit_whole_prompt: bool = Field(default=False, description="admit a prompt only when all of it fits, so "
                                     "its later chunks never preempt running requests")
    seed: int = 0
