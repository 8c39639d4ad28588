"""The ``tether`` command line.

    tether demo                    the main job: the default model answering chats through the engine
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


def _bench(args: argparse.Namespace) -> int:
    if args.what == "engine":
        from tether.engine.bench import main as bench_main
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

    b = sub.add_parser("bench", help="benchmarks (ratios against baselines measured in the same run)")
    b.add_argument("what", choices=["engine", "kernels"])
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
