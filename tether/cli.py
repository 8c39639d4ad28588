"""The ``tether`` command line.

    tether demo                    the main job: a multi-agent workflow on the embedded Ray cluster
    tether serve --port 8000       an OpenAI-compatible HTTP server
    tether run FILE.py:agent --input TEXT   run an agent from a file
    tether bench engine --json     engine throughput and prefix-cache TTFT against transformers
    tether bench kernels --json    Triton kernels against torch (needs CUDA)
    tether model prepare [MODEL]   convert a model (default: the default model) into the cache
"""

from __future__ import annotations

import argparse
import sys


def _model_prepare(args: argparse.Namespace) -> int:
    from tether.engine.model_loader import ModelNotFoundError, resolve_model_path
    try:
        path = resolve_model_path(args.model)
    except ModelNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"model {args.model!r} ready at {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from tether.demo import main as demo_main
    return demo_main(model=args.model)


def _serve(args: argparse.Namespace) -> int:
    from tether.runtime.server import serve
    if args.replicas:
        from tether.agents import Runtime
        with Runtime(model=args.model, replicas=args.replicas) as rt:
            serve(rt.client(), args.host, args.port)
        return 0
    from tether.engine import Engine, EngineConfig
    from tether.runtime.client import LocalClient
    serve(LocalClient(Engine(EngineConfig(model=args.model)), args.model), args.host, args.port)
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
    with Runtime(model=args.model, replicas=args.replicas) as rt:
        try:
            value = rt.run(agent, input=args.input)
        except ProgramFailed as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print(value if isinstance(value, str) else json.dumps(value, indent=2, default=str))
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.what == "engine":
        from tether.engine.bench import main as bench_main
    elif args.what == "runtime":
        from tether.runtime.bench import main as bench_main
    else:
        from tether.kernels.bench import main as bench_main
    bench_main(args.rest + (["--json"] if args.json else []))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tether", description="A runtime for agentic LLM workloads.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the main demo")
    d.add_argument("--model", default="default")
    d.set_defaults(fn=_demo)

    s = sub.add_parser("serve", help="OpenAI-compatible HTTP server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--model", default="default")
    s.add_argument("--replicas", type=int, default=0, help="serve through N Ray engine replicas (0: in-process)")
    s.set_defaults(fn=_serve)

    r = sub.add_parser("run", help="run an agent from a file: FILE.py:agent")
    r.add_argument("target")
    r.add_argument("--input", default="")
    r.add_argument("--model", default="default")
    r.add_argument("--replicas", type=int, default=None)
    r.set_defaults(fn=_run)

    b = sub.add_parser("bench", help="benchmarks (ratios against baselines measured in the same run)")
    b.add_argument("what", choices=["engine", "kernels", "runtime"])
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the benchmark")
    b.set_defaults(fn=_bench)

    m = sub.add_parser("model", help="model cache")
    msub = m.add_subparsers(dest="action", required=True)
    mp = msub.add_parser("prepare", help="convert a model into the cache once")
    mp.add_argument("model", nargs="?", default="default")
    mp.set_defaults(fn=_model_prepare)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args) or 0


if __name__ == "__main__":
    sys.exit(main())
