"""How good is the analytic (roofline) profile? Two checks, one command:

    python -m tether.workloads.analytic_check --out benchmarks/results/DATE-cpu/analytic-profile-check

1. **This CPU.** Measure this machine's matmul FLOP/s and memory bandwidth, build the roofline of the
   default model (SmolLM2-135M, float32) from them, time real engine steps here (``measure_steps``), and
   report the roofline's error per step: with no fixed overhead, and with the two overhead terms
   (per step, per sequence) fitted to the measured steps. The linear profile fitted to the same steps
   and the shipped CPU profile (another machine's) are scored the same way.
2. **Published vLLM step times** (``PUBLISHED``): the roofline's prediction for each, and its error.

Writes ``analytic_check.json``, ``README.md``-ready tables on stdout, and the profile measured here
(``cpu-profile-measured-here.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

from tether.engine.latency_profile import LatencyProfile, StepShape
from tether.workloads.analytic_profile import MODELS, analytic_profile, roofline

# Published per-token decode times of vLLM on Llama-3.1-8B (BF16), one sequence at a time unless said.
PUBLISHED = [
    {"model": "llama-3.1-8b", "accelerator": "A100-40GB", "batch": 1, "context": 1024 + 64, "tpot_ms": 1000 / 75,
     "source": "https://johnmusgrave.com/p/vllm-throughput-latency-sweep-on (vLLM 0.23, 1024 in/128 out, "
               "~75 tok/s at concurrency 1)"},
    {"model": "llama-3.1-8b", "accelerator": "H100", "batch": 1, "context": 600, "tpot_ms": 6.48,
     "source": "https://yobitelcomm.github.io/bench/recipes/concurrency-sweep/ (vLLM 0.21, chatbot-short, "
               "tpot_p50 at concurrency 1)"},
    {"model": "llama-3.1-8b", "accelerator": "H100", "batch": 4, "context": 600, "tpot_ms": 6.59,
     "source": "same, concurrency 4"},
    {"model": "llama-3.1-8b", "accelerator": "H100", "batch": 16, "context": 600, "tpot_ms": 10.94,
     "source": "same, concurrency 16 (decode steps share the GPU with arriving prompts' prefill)"},
]


def measure_cpu_rates(seconds: float = 2.0) -> tuple[float, float]:
    """(FLOP/s of a float32 matmul, bytes/s of a large copy) on this machine, with torch's threads."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    torch.mm(a, b)  # warm up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds / 2:
        torch.mm(a, b)
        n += 1
    flops = 2 * 1024 ** 3 * n / (time.perf_counter() - t0)
    src = torch.ones(64 * 2 ** 20, dtype=torch.float32)  # 256 MiB: far beyond the caches; touched, so no
    dst = torch.zeros_like(src)                          # page faults inside the timed copies
    dst.copy_(src)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds / 2:
        dst.copy_(src)
        n += 1
    return flops, 2 * src.numel() * 4 * n / (time.perf_counter() - t0)  # read + write


def errors(predict, shapes: list[StepShape], times: list[float]) -> dict:
    """Relative error of ``predict(shape)`` against measured step times: per step, and on the total."""
    pred = [predict(s) for s in shapes]
    rel = [abs(p - t) / t for p, t in zip(pred, times)]
    decode = [r for r, s in zip(rel, shapes) if max(s.new_tokens) == 1]
    prefill = [r for r, s in zip(rel, shapes) if max(s.new_tokens) > 1]
    return {"steps": len(times), "median_abs_err": statistics.median(rel), "mean_abs_err": statistics.fmean(rel),
            "decode_median_abs_err": statistics.median(decode) if decode else None,
            "prefill_median_abs_err": statistics.median(prefill) if prefill else None,
            "total_time_err": sum(pred) / sum(times) - 1}


def fit_overheads(rl, shapes: list[StepShape], times: list[float]) -> tuple[float, float]:
    """(base_s, per_seq_s) >= 0 that best fit what the roofline leaves unexplained (least squares)."""
    import numpy as np

    from tether.engine.latency_profile import _nonnegative_lstsq
    X = np.array([[1.0, len(s.new_tokens)] for s in shapes])
    y = np.array([t - rl.time(s.new_tokens, s.context) for s, t in zip(shapes, times)])
    base, per_seq = _nonnegative_lstsq(X, y)
    return float(base), float(per_seq)


def check_cpu(rounds: int, out: Path, steps_file: str | None = None) -> tuple[dict, LatencyProfile]:
    """Score the step-time models on steps measured here (or read back from ``steps_file``)."""
    from tether.engine.config import EngineConfig
    from tether.engine.profiler import _copy_s_per_block, measure_steps
    from tether.workloads.replay import DEFAULT_PROFILE

    flops, bw = measure_cpu_rates()
    copy_s = None
    if steps_file:
        saved = json.loads(Path(steps_file).read_text())
        shapes = [StepShape(**s) for s in saved["shapes"]]
        times, copy_s = saved["times"], saved.get("copy_s_per_block")
    else:
        shapes, times, runner = measure_steps(EngineConfig(model="default", device="cpu"), rounds=rounds)
        copy_s = _copy_s_per_block(runner)
        (out / "steps.json").write_text(json.dumps({"shapes": [s.model_dump() for s in shapes], "times": times,
                                                    "copy_s_per_block": copy_s, "loadavg": os.getloadavg()}))
    fit_s, fit_t = shapes[0::2], times[0::2]  # fit on every other step, score on the rest
    test_s, test_t = shapes[1::2], times[1::2]
    model = replace(MODELS["smollm2-135m"], dtype_bytes=4)  # the engine runs it in float32 on a CPU
    rl = roofline(model, flops, bw)
    base, per_seq = fit_overheads(rl, fit_s, fit_t)
    linear = LatencyProfile.fit(fit_s, fit_t, name="default@cpu (measured here)")
    shipped = LatencyProfile.load(DEFAULT_PROFILE)
    here = LatencyProfile.fit(shapes, times, name="default@cpu (measured here)")
    here.copy_s_per_block = copy_s or 0.0
    here.meta.update(model="default", device="cpu", dtype="float32", samples=len(times))
    result = {
        "cpu_matmul_flops_per_s": flops, "cpu_copy_bytes_per_s": bw, "steps_measured": len(times),
        "loadavg_1_5_15": os.getloadavg(),  # other work on the machine slows steps: judge the errors by it
        "fit_steps": len(fit_t), "scored_steps": len(test_t),
        "roofline_fitted_overheads": {"base_s": base, "per_seq_s": per_seq},
        "scores": {
            "roofline, no overhead": errors(lambda s: rl.time(s.new_tokens, s.context), test_s, test_t),
            "roofline + fitted overheads": errors(
                lambda s: base + per_seq * len(s.new_tokens) + rl.time(s.new_tokens, s.context), test_s, test_t),
            "linear profile fitted here": errors(lambda s: linear.step_time(s.new_tokens, s.context), test_s, test_t),
            "shipped CPU profile (other machine)": errors(
                lambda s: shipped.step_time(s.new_tokens, s.context), test_s, test_t),
        },
    }
    return result, here


def check_published() -> list[dict]:
    rows = []
    for p in PUBLISHED:
        prof = analytic_profile(p["model"], p["accelerator"])
        pred = prof.step_time([1] * p["batch"], [p["context"]] * p["batch"]) * 1e3
        rows.append({**p, "predicted_ms": pred, "error": pred / p["tpot_ms"] - 1})
    return rows


def main(argv: list[str] | None = None) -> dict:
    from tether.engine.cpu_tuning import cpu_model

    ap = argparse.ArgumentParser(prog="python -m tether.workloads.analytic_check", description=__doc__)
    ap.add_argument("--out", required=True, help="folder for analytic_check.json and the profile measured here")
    ap.add_argument("--rounds", type=int, default=1, help="profiling rounds on this CPU (each ~1-3 minutes)")
    ap.add_argument("--steps", help="score steps saved by an earlier run (its steps.json) instead of measuring")
    args = ap.parse_args(argv)
    if os.environ.get("TETHER_CPU_THREADS"):  # profile with the threads the replicas use (runtime/replica.py)
        import torch
        torch.set_num_threads(int(os.environ["TETHER_CPU_THREADS"]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cpu, here = check_cpu(args.rounds, out, args.steps)
    here.save(out / "cpu-profile-measured-here.json")
    import torch
    result = {"cpu": cpu_model(), "torch_threads": torch.get_num_threads(), "cpu_check": cpu,
              "published": check_published()}
    (out / "analytic_check.json").write_text(json.dumps(result, indent=2))
    print(f"cpu: {result['cpu']}  load average {cpu['loadavg_1_5_15'][0]:.1f}  (matmul {cpu['cpu_matmul_flops_per_s'] / 1e9:.0f} GFLOP/s, "
          f"copy {cpu['cpu_copy_bytes_per_s'] / 1e9:.1f} GB/s; {cpu['scored_steps']} steps scored)")
    print("| step-time model | median abs err | decode | prefill | total time err |\n|---|---|---|---|---|")
    for name, e in cpu["scores"].items():
        f = lambda x: "-" if x is None else f"{100 * x:.0f}%"  # noqa: E731
        print(f"| {name} | {f(e['median_abs_err'])} | {f(e['decode_median_abs_err'])} | "
              f"{f(e['prefill_median_abs_err'])} | {100 * e['total_time_err']:+.0f}% |")
    print("\n| published (vLLM, Llama-3.1-8B) | batch | measured TPOT | roofline | error |\n|---|---|---|---|---|")
    for r in result["published"]:
        print(f"| {r['accelerator']} | {r['batch']} | {r['tpot_ms']:.2f} ms | {r['predicted_ms']:.2f} ms | "
              f"{100 * r['error']:+.0f}% |")
    print(f"\nwrote {out / 'analytic_check.json'}")
    return result


if __name__ == "__main__":
    main()
