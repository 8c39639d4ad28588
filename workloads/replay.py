"""``tether replay``: replay one trace under several policies and compare them side by side.

Turns with chunk arrivals (``append_chunks``, e.g. from ``tether trace synth --streamed``)
are streamed in sim mode: opened at the turn's start, each chunk prefilled as it arrives,
sealed at the last one. ``--no-stream`` sends each whole at its last chunk's arrival
(wait-for-all) instead, so both arms run on the same trace; real mode always waits for all.
The summary then adds TTFT after the last chunk and invalidated tokens.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tether.engine.latency_profile import LatencyProfile
from tether.engine.policies import POLICY_PRESETS, PolicyPreset, parse_policies
from tether.runtime.bench_serve import cpu_model
from tether.workloads.records import ReplayRun
from tether.workloads.replay_common import ReplaySettings, TurnFeeder
from tether.workloads.trace import Trace

DEFAULT_PROFILE = Path(__file__).parent / "profiles" / "cpu-smollm2-135m.json"


def run_policies(trace: Trace, policies: list[PolicyPreset], settings: ReplaySettings, mode: str = "sim",
                 profile: LatencyProfile | None = None, model: str = "default",
                 trace_dir: str | None = None) -> list[ReplayRun]:
    """One ``ReplayRun`` per policy, all on the same trace and settings.

    Example::

        runs = run_policies(trace, parse_policies("baseline"), ReplaySettings(kv_blocks=4096))

    ``trace_dir``: write each run's spans into a run folder there (``tether ui --trace-dir``).
    """
    runs = []
    if mode == "sim" and profile is None:
        profile = LatencyProfile.load(DEFAULT_PROFILE)
    ids = TurnFeeder(trace, seed=settings.seed).trace  # synthetic ids (if any) drawn once for every policy
    for policy in policies:
        feeder = TurnFeeder(ids)  # a fresh history per run
        if mode == "sim":
            from tether.workloads.replay_sim import replay_sim
            run = replay_sim(feeder, policy, profile, settings, trace_dir=trace_dir)
        elif mode == "real":
            from tether.workloads.replay_real import replay_real
            if trace_dir is not None:  # the runtime's actors pick the run folder up from the environment
                from tether.runtime import tracing
                run_trace = tracing.enable(trace_dir, kind=f"replay-real-{policy.name}")
            run = replay_real(feeder, policy, settings, model=model)
            if trace_dir is not None:
                tracing.disable()
                run.trace_dir = str(run_trace)
        else:
            raise ValueError(f"mode must be 'sim' or 'real', got {mode!r}")
        run.meta = {"settings": settings.as_dict(), "trace": trace.meta,
                    "profile": profile.name if mode == "sim" else None, "cpu": cpu_model(),
                    "trace_dir": getattr(run, "trace_dir", None)}
        if trace.streamed_turns:
            run.meta["streamed"] = streamed_meta(trace, settings, mode)
        runs.append(run)
    return runs


def streamed_meta(trace: Trace, settings: ReplaySettings, mode: str) -> dict:
    """How a replay treated the trace's streamed turns (results meta, and a line of output)."""
    if mode == "real":
        arm, note = "wait-for-all", "real mode does not stream yet: each streamed turn is sent whole at its last chunk"
    elif settings.stream:
        arm, note = "streamed", "chunks prefilled as they arrive, the prompt sealed at the last one"
    else:
        arm, note = "wait-for-all", "--no-stream: each streamed turn is sent whole at its last chunk"
    return {"turns": trace.streamed_turns, "arm": arm, "note": note}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="tether replay", description=__doc__)
    p.add_argument("trace", help="a tether trace (.jsonl) or any supported trajectory file or folder")
    p.add_argument("--policies", default="baseline", help=f"comma-separated; known: {', '.join(POLICY_PRESETS)}")
    p.add_argument("--mode", choices=["sim", "real", "both"], default="sim",
                   help="both: real, then sim with --profile, and the error of sim against real (sim_vs_real.md)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--rate", type=float, help="Poisson arrivals at this many programs/s")
    rate.add_argument("--concurrency", type=int, help="closed loop: this many programs in flight (default: the "
                      "trace's own, e.g. from `tether trace synth --concurrency`, unless --rate is given)")
    p.add_argument("--kv-blocks", type=int, required=True, help="KV pool size in blocks")
    p.add_argument("--host-blocks", type=int, help="host-memory tier size, the same for every policy that uses "
                   "one (default: as many blocks as --kv-blocks; 0: none)")
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--budget", type=int, default=2048, help="token budget per engine step")
    p.add_argument("--token-scale", type=float, default=1.0)
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--max-context", type=int, help="shrink tokens (keeping turns) so programs fit this context")
    p.add_argument("--reuse-real", metavar="DIR", help="--mode both: compare with the real replay in DIR "
                   "(its results.json, same settings) instead of running it again")
    p.add_argument("--profile", help="latency profile JSON for sim mode (default: the CPU profile shipped), "
                   "or analytic:MODEL@ACCELERATOR[xTP] (simulated-analytic, see workloads/analytic_profile.py)")
    p.add_argument("--model", default="default",
                   help="model for real mode, and whose tokenizer encodes a trajectory's text")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-stream", action="store_true", help="turns with chunk arrivals (trace synth --streamed) "
                   "wait for all their chunks and are sent whole at the last one's arrival; default (sim mode): "
                   "streamed, each chunk prefilled as it arrives. Real mode always waits for all, for now")
    p.add_argument("--stream-min-chunk", type=int, default=1, help="sim: prefill an open (streamed) prompt once "
                   "this many of its tokens wait (the seal flushes the rest)")
    p.add_argument("--out", default="replay-out")
    p.add_argument("--trace-dir", help="also write each run's spans (OTLP JSON) into a run folder here; "
                   "open them with `tether ui --trace-dir DIR`")
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]

    from tether.engine.model_loader import load_tokenizer
    from tether.workloads.loaders import load_trajectories
    from tether.workloads.report import format_table, write_results
    from tether.workloads.scaling import scale_trace
    from tether.workloads.synth import assign_arrivals
    from tether.workloads.tokenize import has_text, tokenize_trace

    trace = load_trajectories(args.trace, seed=args.seed)
    if has_text(trace):  # real text is replayed as the model's tokenizer encodes it; counts need no tokenizer
        trace = tokenize_trace(trace, load_tokenizer(args.model))
    if args.token_scale != 1.0 or args.max_context:
        trace = scale_trace(trace, token_scale=args.token_scale, max_context=args.max_context)
    if args.rate:
        trace = assign_arrivals(trace, rate=args.rate, seed=args.seed)
    concurrency = args.concurrency or (None if args.rate else trace.meta.get("concurrency"))
    settings = ReplaySettings(kv_blocks=args.kv_blocks, host_kv_blocks=args.host_blocks, block_size=args.block_size,
                              max_num_batched_tokens=args.budget, concurrency=concurrency,
                              time_scale=args.time_scale, seed=args.seed, stream=not args.no_stream,
                              stream_min_chunk=args.stream_min_chunk)
    from tether.workloads.analytic_profile import load_profile
    profile = load_profile(args.profile) if args.profile else None
    if args.mode == "both":
        return _both(trace, settings, profile, args)
    runs = run_policies(trace, parse_policies(args.policies), settings, args.mode, profile, args.model,
                        trace_dir=args.trace_dir)
    results = write_results(args.out, runs)
    print(format_table(results["policies"]))
    if trace.streamed_turns:
        m = streamed_meta(trace, settings, args.mode)
        print(f"\nstreamed turns: {m['turns']}, replayed {m['arm']} ({m['note']})")
    print(f"\ncpu: {cpu_model()}\nwrote {Path(args.out) / 'results.json'}")
    for run in runs:
        if run.meta.get("trace_dir"):
            print(f"trace of {run.policy}: {run.meta['trace_dir']}  (open: tether ui --trace-dir {run.meta['trace_dir']})")
    return results


def _both(trace: Trace, settings: ReplaySettings, profile: LatencyProfile | None, args) -> dict:
    """Real, then sim, on the same trace and settings; sim_vs_real.* in ``args.out``."""
    from tether.workloads.report import write_results
    from tether.workloads.sim_vs_real import markdown, write_comparison
    out = Path(args.out)
    policies = parse_policies(args.policies)
    if trace.streamed_turns and settings.stream:  # real mode waits for all chunks: compare like with like
        print(f"note: {trace.streamed_turns} streamed turns are replayed wait-for-all in both modes "
              "(real mode does not stream yet)")
        settings.stream = False
    if args.reuse_real:  # a real replay already made with these settings (e.g. hours on a slow CPU)
        import json
        real = json.loads((Path(args.reuse_real) / "results.json").read_text())
        if real["meta"].get("settings") is not None:  # older results lack newer settings: their defaults
            real["meta"]["settings"] = {**ReplaySettings(kv_blocks=0).as_dict(), **real["meta"]["settings"]}
        if real["meta"].get("settings") != settings.as_dict():
            raise SystemExit(f"{args.reuse_real}: its settings differ from these: {real['meta'].get('settings')}")
    else:
        real = write_results(out / "real", run_policies(trace, policies, settings, "real", model=args.model))
    sim = write_results(out / "sim", run_policies(trace, policies, settings, "sim", profile))
    cmp = write_comparison(out, real, sim, {"command": "tether replay " + " ".join(args.argv)})
    print(markdown(cmp) + f"\n\ncpu: {cpu_model()}\nwrote {out / 'sim_vs_real.md'}")
    return cmp


if __name__ == "__main__":
    main()
