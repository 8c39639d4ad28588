"""Engine configuration."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tether.engine.policies import DEFAULT_POLICY, POLICY_PRESETS


class EngineConfig(BaseModel):
    """Everything that shapes one engine replica.

    Example::

        EngineConfig(model="default", num_kv_blocks=2048, max_num_batched_tokens=512)
        EngineConfig(policy="baseline")            # what vLLM gives, for comparison

    ``policy`` names a preset (``engine/policies.py``: ``baseline``,
    ``baseline-offload``, ``continuum-fixed``, ``tether``, the default) that
    fills every scheduling field below which the config does not set itself.
    ``queue_policy``, ``pin_policy`` and ``eviction_policy`` name registered
    parts (``queue_policy.py``, ``ttl_policy.py``, ``eviction.py``).
    ``num_kv_blocks=None`` sizes the pool from ``kv_cache_memory_gb``;
    ``host_kv_blocks=None`` gives a host tier (when the policy uses one) as many
    blocks as the device pool.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = "default"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "cpu"
    block_size: int = Field(default=16, ge=1)
    num_kv_blocks: int | None = Field(default=None, ge=1)
    kv_cache_memory_gb: float = Field(default=1.0, gt=0)
    # vLLM's online-serving default. On a CPU a 2,048-token prefill chunk runs ~20% more tokens/s than a 512-token one
    # (measured with SmolLM2-135M on a 2-core Xeon; the matmuls are compute-bound there).
    max_num_batched_tokens: int = Field(default=2048, ge=1, description="per-step token budget")
    max_num_seqs: int = Field(default=64, ge=1)
    max_model_len: int | None = Field(default=None, ge=1, description="default: the model's own")
    enable_prefix_caching: bool = True
    seed: int = 0
    max_programs: int = Field(default=100_000, ge=1, description="programs the engine tracks at most")
    program_idle_s: float | None = Field(default=None, gt=0, description="forget a program idle this long "
                                         "(None: 10 times the longest tool call seen, at least 600 s)")

    # ---- cross-agent KV reuse (engine/reuse.py) ----
    reuse: Literal["off", "recompute", "anchors"] = Field(
        default="recompute", description="place known segments' KV in new prompts and correct it: recompute the "
        "deviating tokens (CacheBlend/RelayCaching), estimate the deviation from anchors (KVCOMM), or off")
    reuse_store_tokens: int = Field(default=16384, ge=0, description="tokens of segment KV kept for reuse")
    reuse_min_tokens: int = Field(default=32, ge=8, description="shortest span worth placing")
    reuse_min_share: float = Field(default=0.2, ge=0, le=1, description="place nothing when known segments "
                                   "cover less of the uncached prompt than this: a prompt with placements "
                                   "prefills on a slower path, which a small placement does not repay")
    reuse_check_layer: int = Field(default=1, ge=1, description="layer where placed tokens' deviation is measured")
    reuse_deviation_ratio: float = Field(default=1.5, gt=0, description="recompute tokens deviating more than "
                                         "this times the mean")
    reuse_sink_tokens: int = Field(default=4, ge=0, description="a placed span's first tokens, always recomputed")
    reuse_tail_tokens: int = Field(default=10, ge=0, description="a placed span's last tokens, always recomputed")

    stream_min_chunk: int = Field(default=1, ge=1, description="an open (streamed) prompt is prefilled once this "
                                  "many of its tokens wait (engine/streaming.py)")
    stream_idle_timeout_s: float = Field(default=120.0, gt=0, description="an open prompt with no append, replace "
                                         "or seal for this long is aborted and its KV freed (its caller vanished)")

    # ---- scheduling: a preset fills what is not given ----
    policy: str = DEFAULT_POLICY
    queue_policy: str = "fcfs"
    eviction_policy: str = "lru"
    pin_policy: str = "none"
    max_pin_share: float = Field(default=0.5, gt=0, le=1, description="most of the pool pins may hold")
    starvation_s: float | None = Field(default=None, gt=0, description="a request waiting longer goes first "
                                       "(None: no starvation rule)")
    starvation_turns: float | None = Field(default=None, gt=0, description="if set, the starvation bound is this "
                                           "many recent turn service times instead (scales with the engine's speed)")
    pins_yield_to: Literal["any", "starved", "idle"] = Field(
        default="any", description="which waiting requests may end pins to get blocks: any (vLLM), only starved "
        "ones (tether), or any but only while nothing runs (Continuum)")
    pin_pressure: Literal["release-first", "preempt-first"] = Field(
        default="release-first", description="a running request short of blocks ends pins before preempting, or "
        "preempts first and ends pins only when at most one request runs (Continuum)")
    admit_whole_prompt: bool = Field(default=False, description="admit a prompt only when all of it fits, so "
                                     "its later chunks never preempt running requests")
    host_tier: Literal["off", "programs", "all"] = Field(
        default="off", description="what goes to host memory when evicted: nothing, blocks of programs in a tool "
        "call, or every cached block (vLLM's offload tier)")
    host_kv_blocks: int | None = Field(default=None, ge=0, description="host tier size in blocks (None: as many "
                                       "as the device pool; 0: no host tier)")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = POLICY_PRESETS.get(data.get("policy", DEFAULT_POLICY))
        return {**preset.fields, **data}

    @field_validator("queue_policy", "eviction_policy", "pin_policy")
    @classmethod
    def _registered(cls, name: str, info) -> str:
        from tether.engine.eviction import EVICTION_POLICIES
        from tether.engine.queue_policy import QUEUE_POLICIES
        from tether.engine.ttl_policy import TTL_RULES
        registry = {"queue_policy": QUEUE_POLICIES, "eviction_policy": EVICTION_POLICIES,
                    "pin_policy": TTL_RULES}[info.field_name]
        return registry.check(name)

    def host_blocks(self, device_blocks: int) -> int:
        """The host tier's size for a pool of ``device_blocks`` (0: no host tier)."""
        if self.host_tier == "off":
            return 0
        return device_blocks if self.host_kv_blocks is None else self.host_kv_blocks
