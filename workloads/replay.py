"""``tether replay``: replay one trace under several policies and compare them side by side."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tether.engine.latency_profile import LatencyProfile
from tether.workloads.policies import POLICIES, Policy, get_policies
from tether.workloads.records import ReplayRun
from tether.workloads.replay_common import ReplaySettings, TurnFeeder
from tether.workloads.trace import Trace

DEFAULT_PROFILE = Path(__file__).parent / "profiles" / "cpu-smollm2-135m.json"


def run_policies(trace: Trace, policies: list[Policy], settings: ReplaySettings, mode: str = "sim",
                 profile: LatencyProfile | None = None, model: str = "default") -> list[ReplayRun]:
    """One ``ReplayRun`` per policy, all on the same trace and settings.

    Example::

        runs = run_policies(trace, get_policies("baseline"), ReplaySettings(kv_blocks=4096))
    """
    runs = []
    if mode == "sim" and profile is None:
        profile = LatencyProfile.load(DEFAULT_PROFILE)
    for policy in policies:
        feeder = TurnFeeder(trace, seed=settings.seed)
        if mode == "sim":
            from tether.workloads.replay_sim import replay_sim
            run = replay_sim(feeder, policy, profile, settings)
        elif mode == "real":
            from tether.workloads.replay_real import replay_real
            run = replay_real(feeder, policy, settings, model=model)
        else:
            raise ValueError(f"mode must be 'sim' or 'real', got {mode!r}")
        run.meta = {"settings": settings.as_dict(), "trace": trace.meta,
                    "profile": profile.name if mode == "sim" else None}
        runs.append(run)
    return runs


def _tokenizer(model: str):
    """The model's tokenizer: real text in a trajectory is replayed as the engine would see it."""
    from transformers import AutoTokenizer

    from tether.engine.model_loader import resolve_model_path
    return AutoTokenizer.from_pretrained(str(resolve_model_path(model)))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="tether replay", description=__doc__)
    p.add_argument("trace", help="a tether trace (.jsonl) or any supported trajectory file or folder")
    p.add_argument("--policies", default="baseline", help=f"comma-separated; known: {', '.join(POLICIES)}")
    p.add_argument("--mode", choices=["sim", "real"], default="sim")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--rate", type=float, help="Poisson arrivals at this many programs/s")
    rate.add_argument("--concurrency", type=int, help="closed loop: this many programs in flight")
    p.add_argument("--kv-blocks", type=int, required=True, help="KV pool size in blocks")
    p.add_argument("--host-blocks", type=int, default=0, help="host-memory tier for policies that use one")
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--budget", type=int, default=2048, help="token budget per engine step")
    p.add_argument("--token-scale", type=float, default=1.0)
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--max-context", type=int, help="shrink tokens (keeping turns) so programs fit this context")
    p.add_argument("--profile", help="latency profile JSON for sim mode (default: the CPU profile shipped)")
    p.add_argument("--model", default="default", help="model for real mode")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="replay-out")
    args = p.parse_args(argv)

    from tether.workloads.loaders import load_trajectories
    from tether.workloads.report import format_table, write_results
    from tether.workloads.metrics import summarize
    from tether.workloads.scaling import scale_trace
    from tether.workloads.synth import assign_arrivals

    trace = load_trajectories(args.trace, tokenizer=_tokenizer(args.model), seed=args.seed)
    if args.token_scale != 1.0 or args.max_context:
        trace = scale_trace(trace, token_scale=args.token_scale, max_context=args.max_context)
    if args.rate:
        trace = assign_arrivals(trace, rate=args.rate, seed=args.seed)
    settings = ReplaySettings(kv_blocks=args.kv_blocks, host_kv_blocks=args.host_blocks, block_size=args.block_size,
                              max_num_batched_tokens=args.budget, concurrency=args.concurrency,
                              time_scale=args.time_scale, seed=args.seed)
    profile = LatencyProfile.load(args.profile) if args.profile else None
    runs = run_policies(trace, get_policies(args.policies), settings, args.mode, profile, args.model)
    print(format_table({r.policy: summarize(r) for r in runs}))
    results = write_results(args.out, runs, {**trace.meta, "mode": args.mode, "settings": settings.as_dict()})
    print(f"\nwrote {Path(args.out) / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
