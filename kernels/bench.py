"""``tether bench kernels``: Triton paged attention against torch SDPA on the same GPU, in one run.

Decode: batches of q_len == 1 sequences over a paged bf16 cache (32 query heads,
8 kv heads, head_dim 128, block_size 16; blocks scattered through the pool as a
serving engine leaves them). Reported as achieved KV bandwidth, bytes of K and V
read per second, and as a fraction of the card's peak HBM bandwidth. The
baseline is SDPA over the same K/V gathered into contiguous tensors, with each
GQA group's query heads as the query rows of its kv head (same bytes read).

Prefill: one chunk with an empty prefix (causal attention over itself), in
TFLOP/s, beside ``F.scaled_dot_product_attention(is_causal=True)`` on
contiguous tensors (K/V expanded to all query heads outside the timing).

Timing: CUDA events around each call after warmup, L2 flushed before every
timed call so small caches are not served from L2; the median is reported.
The Triton call is timed as the engine makes it, with host-known length bounds (no host sync).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F

from tether.kernels import reference

NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, BLOCK_SIZE = 32, 8, 128, 16
DTYPE = torch.bfloat16

# Peak HBM bandwidth in bytes/s, matched as a substring of the device name;
# the first match wins, so more specific names come first.
PEAK_HBM_BYTES_PER_S: list[tuple[str, float]] = [
    ("GB200", 8.0e12),
    ("B200", 8.0e12),
    ("H200", 4.8e12),
    ("H100 NVL", 3.9e12),
    ("H100 PCIe", 2.0e12),
    ("H100", 3.35e12),           # SXM: "NVIDIA H100 80GB HBM3"
    ("H800", 3.35e12),
    ("A100-SXM4-80GB", 2.039e12),
    ("A100 80GB PCIe", 1.935e12),
    ("A100", 1.555e12),          # 40 GB parts
    ("L40S", 0.864e12),
    ("L40", 0.864e12),
    ("A10G", 0.6e12),
    ("A10", 0.6e12),
    ("L4", 0.3e12),
    ("RTX 4090", 1.008e12),
    ("RTX 3090", 0.936e12),
    ("MI300X", 5.3e12),
]


def peak_bandwidth(device_name: str) -> float | None:
    """Peak HBM bytes/s for a device name, or None when the card is not in the table."""
    name = device_name.lower()
    return next((bw for key, bw in PEAK_HBM_BYTES_PER_S if key.lower() in name), None)


def _time_ms(fn: Callable[[], object], warmup: int, iters: int) -> float:
    """Median milliseconds of ``fn`` over ``iters`` calls, each after an L2 flush."""
    flush = torch.empty(256 * 1024 * 1024, dtype=torch.int8, device="cuda")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _paged_cache(batch: int, seq_len: int):
    """Random K/V pools holding ``batch`` sequences of ``seq_len`` tokens in shuffled blocks."""
    blocks_per_seq = math.ceil(seq_len / BLOCK_SIZE)
    num_blocks = batch * blocks_per_seq
    shape = (num_blocks, BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM)
    k_cache = torch.randn(shape, dtype=DTYPE, device="cuda")
    v_cache = torch.randn(shape, dtype=DTYPE, device="cuda")
    block_tables = torch.randperm(num_blocks, device="cuda", dtype=torch.int32).view(batch, blocks_per_seq)
    return k_cache, v_cache, block_tables


def _gather(cache: torch.Tensor, block_tables: torch.Tensor, seq_len: int) -> torch.Tensor:
    """[batch, kv_heads, seq_len, head_dim] contiguous copy of the sequences' K or V."""
    return reference._gather(cache, block_tables, seq_len).transpose(1, 2).contiguous()


def bench_decode(batch: int, context: int, peak: float | None, warmup: int, iters: int) -> dict:
    from tether.kernels import triton_ops

    scale = HEAD_DIM ** -0.5
    group = NUM_HEADS // NUM_KV_HEADS
    k_cache, v_cache, block_tables = _paged_cache(batch, context)
    q = torch.randn(batch, NUM_HEADS, HEAD_DIM, dtype=DTYPE, device="cuda")
    query_start_loc = torch.arange(batch + 1, dtype=torch.int32, device="cuda")
    seq_lens = torch.full((batch,), context, dtype=torch.int32, device="cuda")
    kv_bytes = 2 * batch * context * NUM_KV_HEADS * HEAD_DIM * k_cache.element_size()

    def triton_call():
        return triton_ops.paged_attention(q, k_cache, v_cache, block_tables, query_start_loc, seq_lens, scale,
                                          max_q_len=1, max_seq_len=context)

    triton_ms = _time_ms(triton_call, warmup, iters)
    triton_out = triton_call()

    k, v = _gather(k_cache, block_tables, context), _gather(v_cache, block_tables, context)
    del k_cache, v_cache
    # Query heads of one GQA group become the query rows of their kv head: no K/V repeat.
    q_grouped = q.view(batch, NUM_KV_HEADS, group, HEAD_DIM)

    def sdpa_call():
        return F.scaled_dot_product_attention(q_grouped, k, v, scale=scale)

    sdpa_ms = _time_ms(sdpa_call, warmup, iters)
    sdpa_out = sdpa_call().reshape(batch, NUM_HEADS, HEAD_DIM)
    result = {"batch": batch, "context": context, "kv_bytes": kv_bytes}
    for name, ms in (("triton", triton_ms), ("sdpa", sdpa_ms)):
        bw = kv_bytes / (ms * 1e-3)
        result |= {f"{name}_ms": ms, f"{name}_kv_bytes_per_s": bw,
                   f"{name}_peak_fraction": bw / peak if peak else None}
    result["max_abs_diff"] = (triton_out.float() - sdpa_out.float()).abs().max().item()
    return result


def bench_prefill(seq_len: int, warmup: int, iters: int) -> dict:
    from tether.kernels import triton_ops

    scale = HEAD_DIM ** -0.5
    group = NUM_HEADS // NUM_KV_HEADS
    k_cache, v_cache, block_tables = _paged_cache(1, seq_len)
    q = torch.randn(seq_len, NUM_HEADS, HEAD_DIM, dtype=DTYPE, device="cuda")
    query_start_loc = torch.tensor([0, seq_len], dtype=torch.int32, device="cuda")
    seq_lens = torch.tensor([seq_len], dtype=torch.int32, device="cuda")
    # Causal: query i sees i + 1 keys; QK^T and PV are 2 * head_dim FLOPs per (query, key) each.
    flops = 4 * NUM_HEADS * HEAD_DIM * seq_len * (seq_len + 1) // 2

    def triton_call():
        return triton_ops.paged_attention(q, k_cache, v_cache, block_tables, query_start_loc, seq_lens, scale,
                                          max_q_len=seq_len, max_seq_len=seq_len)

    triton_ms = _time_ms(triton_call, warmup, iters)
    triton_out = triton_call()

    k = _gather(k_cache, block_tables, seq_len).repeat_interleave(group, dim=1)
    v = _gather(v_cache, block_tables, seq_len).repeat_interleave(group, dim=1)
    del k_cache, v_cache
    q_sdpa = q.transpose(0, 1).unsqueeze(0)  # [1, heads, seq_len, head_dim]

    def sdpa_call():
        return F.scaled_dot_product_attention(q_sdpa, k, v, is_causal=True, scale=scale)

    sdpa_ms = _time_ms(sdpa_call, warmup, iters)
    sdpa_out = sdpa_call()[0].transpose(0, 1)
    return {
        "seq_len": seq_len, "flops": flops,
        "triton_ms": triton_ms, "triton_tflops": flops / (triton_ms * 1e-3) / 1e12,
        "sdpa_ms": sdpa_ms, "sdpa_tflops": flops / (sdpa_ms * 1e-3) / 1e12,
        "max_abs_diff": (triton_out.float() - sdpa_out.float()).abs().max().item(),
    }


def _guarded(fn: Callable[..., dict], *args, **keys) -> dict:
    """Run one case; an out-of-memory case is reported and the run goes on."""
    try:
        return fn(*args)
    except torch.cuda.OutOfMemoryError:
        return keys | {"error": "out of memory"}
    finally:
        torch.cuda.empty_cache()


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _print_table(report: dict) -> None:
    def pct(x):
        return f"{100 * x:5.1f}%" if x is not None else "    ?"

    peak = report["peak_hbm_bytes_per_s"]
    print(f"{report['device']}  peak HBM {peak / 1e12:.2f} TB/s" if peak else f"{report['device']}  peak HBM unknown")
    print("decode (KV bandwidth)      triton                   sdpa")
    for r in report["decode"]:
        head = f"  b={r['batch']:<4d} ctx={r['context']:<6d}"
        if "error" in r:
            print(f"{head} {r['error']}")
            continue
        print(f"{head} {r['triton_kv_bytes_per_s'] / 1e12:6.2f} TB/s {pct(r['triton_peak_fraction'])}"
              f"   {r['sdpa_kv_bytes_per_s'] / 1e12:6.2f} TB/s {pct(r['sdpa_peak_fraction'])}")
    print("prefill (causal)           triton        sdpa")
    for r in report["prefill"]:
        head = f"  len={r['seq_len']:<20d}"
        if "error" in r:
            print(f"{head} {r['error']}")
            continue
        print(f"{head} {r['triton_tflops']:6.1f} TFLOP/s {r['sdpa_tflops']:6.1f} TFLOP/s")


def main(argv: list[str] | None = None) -> dict:
    """Run the kernel benchmarks; print a table, or one JSON object with ``--json``; return the report."""
    parser = argparse.ArgumentParser(prog="tether bench kernels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--batches", type=_ints, default=[1, 32, 128], help="decode batch sizes, comma-separated")
    parser.add_argument("--contexts", type=_ints, default=[1024, 2048, 4096, 8192, 16384, 32768],
                        help="decode context lengths, comma-separated")
    parser.add_argument("--prefill-lens", type=_ints, default=[1024, 2048, 4096, 8192, 16384],
                        help="prefill chunk lengths, comma-separated")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        raise SystemExit("tether bench kernels needs a CUDA GPU: torch.cuda.is_available() is False")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("tether bench kernels: unset TRITON_INTERPRET (the interpreter is not a benchmark)")

    import triton

    torch.manual_seed(0)
    device_name = torch.cuda.get_device_name()
    peak = peak_bandwidth(device_name)
    report = {
        "device": device_name,
        "peak_hbm_bytes_per_s": peak,
        "config": {"num_heads": NUM_HEADS, "num_kv_heads": NUM_KV_HEADS, "head_dim": HEAD_DIM,
                   "block_size": BLOCK_SIZE, "dtype": str(DTYPE).removeprefix("torch."),
                   "warmup": args.warmup, "iters": args.iters,
                   "torch": torch.__version__, "triton": triton.__version__},
        "decode": [_guarded(bench_decode, b, c, peak, args.warmup, args.iters, batch=b, context=c)
                   for b in args.batches for c in args.contexts],
        "prefill": [_guarded(bench_prefill, n, args.warmup, args.iters, seq_len=n) for n in args.prefill_lens],
    }
    if args.json:
        print(json.dumps(report))
    else:
        _print_table(report)
    return report


if __name__ == "__main__":
    main()
