"""``tether profile``: measure a latency profile for the simulated runner on this machine."""

from __future__ import annotations

import argparse
import random
import time

from tether.engine.config import EngineConfig
from tether.engine.cpu_tuning import cpu_info
from tether.engine.engine import Engine
from tether.engine.latency_profile import LatencyProfile, StepShape
from tether.engine.progress import progress
from tether.engine.request import Request
from tether.engine.sampling import SamplingParams


def measure_profile(config: EngineConfig, seed: int = 0, rounds: int = 3) -> LatencyProfile:
    """Run mixed prefill/decode steps through the real runner, time each, fit the model.

    Example::

        prof = measure_profile(EngineConfig(model="default"))
        prof.save("profiles/cpu-smollm2.json")
    """
    shapes, times, runner = measure_steps(config, seed, rounds)
    name = f"{config.model}@{config.device}"
    prof = LatencyProfile.fit(shapes, times, name=name)
    prof.copy_s_per_block = _copy_s_per_block(runner)
    prof.meta.update(model=config.model, device=config.device, dtype=config.dtype,
                     max_num_batched_tokens=config.max_num_batched_tokens, **cpu_info())  # a profile is this CPU's
    return prof


def measure_steps(config: EngineConfig, seed: int = 0, rounds: int = 3) -> tuple[list[StepShape], list[float], object]:
    """The measured steps behind ``measure_profile``: (shapes, seconds each, the runner).

        shapes, times, _ = measure_steps(EngineConfig(model="default"), rounds=1)
    """
    engine = Engine(config)
    core, runner = engine.core, engine.core.runner
    shapes: list[StepShape] = []
    times: list[float] = []

    def on_step(ev) -> None:  # the core times every runner call for its listeners
        if ev.kind == "step":
            shapes.append(StepShape(new_tokens=ev.data["new_tokens"], context=ev.data["context"]))
            times.append(ev.data["duration_s"])
    core.add_listener(on_step)
    rng = random.Random(seed)
    limit = min(core.max_model_len, 4096)
    with progress("profile (requests done)", rounds * 21) as advance:  # 1 + 4 + 16 requests a round
        _run_rounds(core, rng, limit, rounds, times, advance)
    return shapes, times, runner


def _run_rounds(core, rng: random.Random, limit: int, rounds: int, times: list[float], advance) -> None:
    for r in range(rounds):
        # Vary batch width and prompt length so every term of the model is exercised.
        for width in (1, 4, 16):
            for _ in range(width):
                n = rng.randint(16, limit // 2)
                core.add_request(Request(prompt_token_ids=[rng.randrange(1000, 20000) for _ in range(n)],
                                         sampling=SamplingParams(max_tokens=rng.randint(8, 48), temperature=0,
                                                                 ignore_eos=True)))
            while core.has_work():
                # Time the whole step, not only the runner's part that the event reports: scheduling,
                # host-tier copies and applying the results take real time too, and a replay's clock
                # must advance by all of it.
                n, t0 = len(times), time.perf_counter()
                outs = core.step()
                if len(times) > n:
                    times[-1] = time.perf_counter() - t0
                advance(sum(o.finished for o in outs))


def _copy_s_per_block(runner, blocks: int = 64) -> float:
    """Time a device -> host -> device round trip of ``blocks`` blocks, per block and direction."""
    import torch

    from tether.kernels import copy_blocks
    ids = torch.arange(blocks)
    host = [(torch.empty((blocks, *k.shape[1:]), dtype=k.dtype), torch.empty((blocks, *v.shape[1:]), dtype=v.dtype))
            for k, v in runner.kv_caches]
    t0 = time.perf_counter()
    for (k, v), (hk, hv) in zip(runner.kv_caches, host):
        copy_blocks(k, hk, ids, ids)
        copy_blocks(v, hv, ids, ids)
    for (k, v), (hk, hv) in zip(runner.kv_caches, host):
        copy_blocks(hk, k, ids, ids)
        copy_blocks(hv, v, ids, ids)
    if runner.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / (2 * blocks)


def main(argv: list[str] | None = None) -> LatencyProfile:
    p = argparse.ArgumentParser(prog="tether profile", description=__doc__)
    p.add_argument("--model", default="default")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="profile.json")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    prof = measure_profile(EngineConfig(model=args.model, device=args.device), rounds=args.rounds)
    print(f"{prof.model_dump_json(indent=2)}\nsaved to {prof.save(args.out)}")
    return prof
