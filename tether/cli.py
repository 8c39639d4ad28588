"""The ``tether`` command line.

    tether demo [--policy P]       the main job: a multi-agent workflow on the embedded Ray cluster
    tether serve --port 8000 [--policy P] [--api-key KEY]   an OpenAI-compatible HTTP server
    tether run FILE.py:agent --input TEXT [--policy P]   run an agent from a file
    (--policy P: a scheduling preset of tether.engine.policies; default tether)
    tether bench engine --json     engine throughput and prefix-cache TTFT against transformers
    tether bench kernels --json    Triton kernels against torch (needs CUDA)
    tether bench serve --clients 64 --seconds 60 --json   a loopback load test of the HTTP server
    tether bench tracing --json    tracing on vs off on bench engine's workload (tokens/s ratio)
    tether bench reuse --json [--chain]   cross-agent KV reuse against dense prefill (5 agents; SDK chain)
    tether bench streaming --json  streamed prompts (Stream2LLM) against wait-for-all: TTFT, throughput
    tether model prepare [MODEL]   convert a model (default: the default model) into the cache
    tether trace convert INPUT --out trace.jsonl      any supported trajectory file or folder -> a trace
    tether trace synth --programs N --seed S --out trace.jsonl [--streamed append|update]
    tether replay TRACE --policies baseline --kv-blocks N --mode sim|real --out DIR [--no-stream]
    tether profile --out profile.json                 measure a latency profile for simulated replay
    tether report DIR              a replay's CSVs, table and plots again, from DIR/results.json and runs.json.gz
    tether ui [--trace-dir DIR]    the tracing UI over the local trace store (default ~/.cache/tether/traces)
    tether trace export --chrome OUT.json [--trace-dir DIR]   a run in Chrome trace format (Perfetto)
    (--trace-dir DIR / --otlp-endpoint URL on demo, serve, run: where spans go; see docs/tracing.md)
"""

from __future__ import annotations

import argparse
import sys


def _model_prepare(args: argparse.Namespace) -> int:
    from tether.engine.model_loader import ModelNotFoundError, resolve_model_path
    from tether.engine.progress import progress
    try:
        with progress(f"preparing model {args.model!r} (a GGUF converts once, about a minute)"):
            path = resolve_model_path(args.model)
    except ModelNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"model {args.model!r} ready at {path}")
    return 0


def _start_tracing(args: argparse.Namespace, kind: str, default_on: bool = False) -> bool:
    """Trace this command when asked (``--trace``, ``--trace-dir``, ``--otlp-endpoint``) or by default."""
    on = not getattr(args, "no_trace", False) and (default_on or args.trace or args.trace_dir or args.otlp_endpoint)
    if on:
        from tether.runtime import tracing
        tracing.enable(args.trace_dir, kind=kind, otlp_endpoint=args.otlp_endpoint, capture_content=args.trace_content)
    return bool(on)


def _demo(args: argparse.Namespace) -> int:
    from tether.demo import main as demo_main
    _start_tracing(args, "demo", default_on=True)
    return demo_main(model=args.model, policy=args.policy)


def _ui(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tether.runtime.tracing.spans import DEFAULT_ROOT
    from tether.runtime.tracing.store import list_runs
    from tether.runtime.tracing.ui_server import serve_ui
    root = Path(args.trace_dir).expanduser() if args.trace_dir else DEFAULT_ROOT
    runs = list_runs(root)
    print(f"tether ui: http://{args.host}:{args.port}/ui/  ({len(runs)} runs in {root}; Ctrl-C stops it)")
    serve_ui(root, args.host, args.port)
    return 0


def _trace_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tether.runtime.tracing.chrome import write_chrome
    from tether.runtime.tracing.spans import DEFAULT_ROOT
    from tether.runtime.tracing.store import list_runs, read_run
    root = Path(args.trace_dir).expanduser() if args.trace_dir else DEFAULT_ROOT
    runs = list_runs(root)
    if args.run:
        runs = [r for r in runs if r.name == args.run]
    if not runs:
        print(f"error: no trace run{' ' + repr(args.run) if args.run else ''} in {root}; run `tether demo` "
              "or pass --trace-dir", file=sys.stderr)
        return 2
    n = write_chrome(read_run(runs[0]), Path(args.chrome))
    print(f"wrote {n} events of run {runs[0].name} to {args.chrome} (open it at https://ui.perfetto.dev)")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from tether.runtime.server import API_KEY_ENV, serve
    from tether.runtime.tracing.spans import DEFAULT_ROOT
    traced = _start_tracing(args, "serve")
    from tether.runtime.tracing.spans import settings as trace_settings
    if traced:
        print(f"tracing into {trace_settings().run_dir}", file=sys.stderr)
    print(f"trace UI: http://{args.host}:{args.port}/ui/", file=sys.stderr)
    limits = {"api_key": args.api_key or os.environ.get(API_KEY_ENV) or None,
              "ui_root": Path(args.trace_dir).expanduser() if args.trace_dir else DEFAULT_ROOT,
              "metrics_need_key": args.metrics_need_key,
              "max_body_bytes": int(args.max_body_mb * 2**20) if args.max_body_mb > 0 else None}
    if args.replicas:
        from tether.agents import Runtime
        with Runtime(model=args.model, replicas=args.replicas, policy=args.policy) as rt:
            serve(rt.client(), args.host, args.port, **limits)
        return 0
    from tether.engine import Engine, EngineConfig
    from tether.runtime.client import LocalClient
    engine = Engine(EngineConfig(model=args.model, policy=args.policy))
    if traced:
        from tether.runtime.tracing.engine_spans import attach
        attach(engine.core)
    serve(LocalClient(engine, args.model), args.host, args.port, **limits)
    return 0


def _run(args: argparse.Namespace) -> int:
    import importlib.util
    import json
    from pathlib import Path

    from tether.agents import ProgramFailed, Runtime
    file, _, name = args.target.partition(":")
    path = Path(file)
    if not path.is_file() or not name:
        print(f"error: expected FILE.py:agent with an existing file, got {args.target!r}", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    agent = getattr(module, name, None)
    if agent is None:
        print(f"error: {file} defines no {name!r}", file=sys.stderr)
        return 2
    _start_tracing(args, "run")
    with Runtime(model=args.model, replicas=args.replicas, policy=args.policy) as rt:
        try:
            value = rt.run(agent, input=args.input)
        except ProgramFailed as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print(value if isinstance(value, str) else json.dumps(value, indent=2, default=str))
    from tether.runtime.tracing.spans import where_note
    if where_note():
        print(where_note(), file=sys.stderr)
    return 0


def _trace(args: argparse.Namespace) -> int:
    from tether.engine.model_loader import ModelNotFoundError, load_tokenizer
    from tether.workloads.trace import TraceError
    try:
        if args.action == "convert":
            from tether.workloads.loaders import load_trajectories
            tokenizer = load_tokenizer(args.model) if args.tokenize else None
            trace = load_trajectories(args.input, tokenizer=tokenizer, seed=args.seed)
        else:
            from tether.workloads.synth import synthesize
            trace = synthesize(args.programs, seed=args.seed, rate=args.rate, concurrency=args.concurrency)
            if args.streamed:
                from tether.workloads.synth_streamed import add_chunk_arrivals
                classes = tuple(c.strip() for c in args.streamed_classes.split(",") if c.strip())
                trace = add_chunk_arrivals(trace, args.streamed, seed=args.seed, share=args.streamed_share,
                                           classes=classes)
    except (TraceError, ModelNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = trace.save(args.out)
    turns = sum(len(p.turns) for p in trace.programs)
    streamed = f" ({trace.streamed_turns} streamed)" if trace.streamed_turns else ""
    print(f"wrote {len(trace.programs)} programs, {turns} turns{streamed} to {path}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from tether.engine.model_loader import ModelNotFoundError
    from tether.workloads.replay import main as replay_main
    from tether.workloads.trace import TraceError
    try:
        replay_main(args.rest)
    except (TraceError, ValueError, ModelNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _report(args: argparse.Namespace) -> int:
    from tether.workloads.report import write_report
    try:
        written = write_report(args.dir)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    plots = [written["plots"]["jct_cdf"], written["plots"].get("kv_usage"), *written["plots"]["timeline"].values()]
    print(f"wrote {len(written['turns_csv'])} CSVs, {len([p for p in plots if p])} plots and the table in {args.dir}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.what == "engine":
        from tether.engine.bench import main as bench_main
    elif args.what == "runtime":
        from tether.runtime.bench import main as bench_main
    elif args.what == "serve":
        from tether.runtime.bench_serve import main as bench_main
    elif args.what == "tracing":
        from tether.runtime.tracing.bench import main as bench_main
    elif args.what == "reuse":
        from tether.bench_reuse import main as bench_main
    elif args.what == "streaming":
        from tether.engine.bench_streaming import main as bench_main
    else:
        from tether.kernels.bench import main as bench_main
    result = bench_main(args.rest)
    if args.what == "serve" and (result["errors"] or not result["kv_blocks_free_after"]):
        return 1
    return 0


def _policy_option(p: argparse.ArgumentParser) -> None:
    """``--policy``: the engine's scheduling preset (``tether.engine.policies``)."""
    from tether.engine.policies import DEFAULT_POLICY, POLICY_PRESETS
    p.add_argument("--policy", choices=POLICY_PRESETS.names(), default=DEFAULT_POLICY,
                   help=f"the engine's scheduling policy preset (default: {DEFAULT_POLICY})")


def _trace_options(p: argparse.ArgumentParser, default_on: bool = False) -> None:
    """Where this command's spans go (docs/tracing.md)."""
    if default_on:
        p.add_argument("--no-trace", action="store_true", help="write no trace")
    else:
        p.add_argument("--trace", action="store_true", help="trace into ~/.cache/tether/traces (or --trace-dir)")
    p.add_argument("--trace-dir", default=None, help="the local trace store (default ~/.cache/tether/traces); "
                   "a run folder is created in it")
    p.add_argument("--otlp-endpoint", default=None, help="also export spans over OTLP/HTTP to this collector, "
                   "e.g. http://127.0.0.1:4318/v1/traces (Phoenix, Jaeger)")
    p.add_argument("--trace-content", action="store_true", help="record message contents and tool arguments")
    p.set_defaults(trace=default_on)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tether", description="A runtime for agentic LLM workloads.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the main demo")
    d.add_argument("--model", default="default")
    _policy_option(d)
    _trace_options(d, default_on=True)
    d.set_defaults(fn=_demo)

    s = sub.add_parser("serve", help="OpenAI-compatible HTTP server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--model", default="default")
    s.add_argument("--replicas", type=int, default=0, help="serve through N Ray engine replicas (0: in-process)")
    s.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on every route but /health "
                   "and /metrics (default: the environment's TETHER_API_KEY; none: no key)")
    s.add_argument("--metrics-need-key", action="store_true", help="/metrics needs the API key too")
    s.add_argument("--max-body-mb", type=float, default=8.0, help="refuse request bodies over this many MiB "
                   "with 413 (0: no limit; default 8)")
    _policy_option(s)
    _trace_options(s)
    s.set_defaults(fn=_serve)

    r = sub.add_parser("run", help="run an agent from a file: FILE.py:agent")
    r.add_argument("target")
    r.add_argument("--input", default="")
    r.add_argument("--model", default="default")
    r.add_argument("--replicas", type=int, default=None)
    _policy_option(r)
    _trace_options(r)
    r.set_defaults(fn=_run)

    b = sub.add_parser("bench", help="benchmarks (ratios against baselines measured in the same run)")
    b.add_argument("what", choices=["engine", "kernels", "runtime", "serve", "tracing", "reuse", "streaming"])
    b.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the benchmark, e.g. --json")
    b.set_defaults(fn=_bench)

    t = sub.add_parser("trace", help="convert or synthesize traces")
    tsub = t.add_subparsers(dest="action", required=True)
    tc = tsub.add_parser("convert", help="a trajectory file or folder (format detected) -> trace.jsonl")
    tc.add_argument("input")
    tc.add_argument("--out", required=True)
    tc.add_argument("--tokenize", action="store_true", help="tokenize real text with the model's tokenizer")
    tc.add_argument("--model", default="default")
    tc.add_argument("--seed", type=int, default=0, help="for durations drawn where the source has none")
    tc.set_defaults(fn=_trace)
    ts = tsub.add_parser("synth", help="synthesize SWE-bench-like programs")
    ts.add_argument("--programs", type=int, required=True)
    ts.add_argument("--seed", type=int, default=0)
    arr = ts.add_mutually_exclusive_group()
    arr.add_argument("--rate", type=float, help="Poisson arrivals, programs/s")
    arr.add_argument("--concurrency", type=int, help="closed loop at this many programs in flight")
    ts.add_argument("--streamed", choices=["append", "update"], help="give turns chunk arrivals (Stream2LLM): "
                    "append = crawler-style, update = vector-search-style with re-ranks that replace; 8-32 "
                    "chunks over 1.5-3 s after the previous tool returns (tether replay streams them)")
    ts.add_argument("--streamed-classes", default="search,view", help="--streamed: turns whose previous tool "
                    "is of these classes stream (default: search,view, the retrieval-like ones)")
    ts.add_argument("--streamed-share", type=float, default=1.0,
                    help="--streamed: the share of those turns that stream (default 1)")
    ts.add_argument("--out", required=True)
    ts.set_defaults(fn=_trace)
    te = tsub.add_parser("export", help="a recorded run of spans -> Chrome trace format (Perfetto)")
    te.add_argument("--chrome", required=True, metavar="OUT.json", help="write Chrome trace event JSON here")
    te.add_argument("--trace-dir", default=None, help="the trace store or one run folder (default ~/.cache/tether/traces)")
    te.add_argument("--run", default=None, help="the run folder's name (default: the newest)")
    te.set_defaults(fn=_trace_export)

    u = sub.add_parser("ui", help="the tracing UI (http://127.0.0.1:8321/ui/)")
    u.add_argument("--trace-dir", default=None, help="the trace store or one run folder (default ~/.cache/tether/traces)")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=8321)
    u.set_defaults(fn=_ui)

    rp = sub.add_parser("report", help="write a replay's CSVs, table and plots again from its results.json")
    rp.add_argument("dir", help="a results folder (tether replay --out): results.json and runs.json.gz")
    rp.set_defaults(fn=_report)

    # Listed for --help; main() hands their arguments to the modules' own parsers.
    sub.add_parser("replay", help="replay a trace under policies (see tether replay --help)")
    sub.add_parser("profile", help="measure a latency profile (see tether profile --help)")

    m = sub.add_parser("model", help="model cache")
    msub = m.add_subparsers(dest="action", required=True)
    mp = msub.add_parser("prepare", help="convert a model into the cache once")
    mp.add_argument("model", nargs="?", default="default")
    mp.set_defaults(fn=_model_prepare)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "replay":  # these two parse their own options
        return _replay(argparse.Namespace(rest=argv[1:]))
    if argv and argv[0] == "profile":
        from tether.engine.profiler import main as profile_main
        profile_main(argv[1:])
        return 0
    args = build_parser().parse_args(argv)
    return args.fn(args) or 0


if __name__ == "__main__":
    sys.exit(main())
