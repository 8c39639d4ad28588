"""The simulated runner: the engine's scheduler and KV manager, unchanged, on a virtual
clock that advances by a latency profile's step time instead of computing.

It allocates no KV tensors, only block accounting, so a pool of millions of
blocks costs nothing; the replay harness uses it for studies larger than the machine.
"""

from __future__ import annotations

from tether.engine.clock import VirtualClock
from tether.engine.config import EngineConfig
from tether.engine.core import EngineCore
from tether.engine.latency_profile import LatencyProfile
from tether.engine.runner import Runner, forced_token
from tether.engine.sampler import SampleResult
from tether.engine.scheduler import ScheduledBatch


class SimulatedRunner(Runner):
    """Emits the forced output token (or ``filler_token``) after advancing the clock.

    Example::

        clock = VirtualClock()
        core = build_simulated_core(EngineConfig(num_kv_blocks=10**6), profile, clock)
    """

    def __init__(self, profile: LatencyProfile, clock: VirtualClock, filler_token: int = 0):
        self.profile = profile
        self.clock = clock
        self.filler_token = filler_token

    def prefill_time_s(self, tokens: int) -> float:
        return self.profile.prefill_time(tokens) if tokens else 0.0

    def copy_time_s(self, blocks: int) -> float:
        return blocks * self.profile.copy_s_per_block

    def swap(self, swap_out: list[tuple[int, int]], swap_in: list[tuple[int, int]]) -> None:
        dt = self.copy_time_s(len(swap_out) + len(swap_in))  # no tensors: only the time
        self.clock.advance(dt)

    def execute(self, batch: ScheduledBatch) -> list[SampleResult | None]:
        contexts = [s.num_computed_tokens + n for s, n in zip(batch.seqs, batch.num_new_tokens)]
        dt = self.profile.step_time(batch.num_new_tokens, contexts)
        self.clock.advance(dt)
        out: list[SampleResult | None] = []
        for seq, end in zip(batch.seqs, contexts):
            if end < seq.num_tokens:
                out.append(None)  # a prompt chunk that does not reach the end
            else:
                forced = forced_token(seq)
                out.append(SampleResult(self.filler_token if forced is None else forced))
        return out


def build_simulated_core(config: EngineConfig, profile: LatencyProfile, clock: VirtualClock,
                         max_model_len: int = 1 << 30, vocab_size: int = 1 << 31) -> EngineCore:
    """An ``EngineCore`` whose steps take the profile's time on ``clock``; needs ``num_kv_blocks``."""
    if config.num_kv_blocks is None:
        raise ValueError("a simulated engine needs num_kv_blocks (there is no memory to size it from)")
    return EngineCore(config, SimulatedRunner(profile, clock), config.num_kv_blocks, max_model_len, vocab_size,
                      eos_token_ids=(), clock=clock)
