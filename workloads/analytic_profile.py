"""GPU-class latency profiles without a GPU: a roofline from a model's shape and an accelerator's datasheet.

A step's time is ``base_s + per_seq_s * seqs + max(FLOPs / achieved FLOP/s, bytes / achieved bytes/s)``
(``engine.latency_profile.Roofline``): FLOPs from the weight matmuls, the LM head and attention; bytes from
reading the weights once and every sequence's KV. Achieved = datasheet peak x an efficiency (assumed, see
``FLOPS_EFFICIENCY`` / ``BANDWIDTH_EFFICIENCY``; ``tether.workloads.analytic_check`` compares the model
with published vLLM step times and with a profile measured on this CPU).

    prof = analytic_profile("llama-3.1-8b", "H100")          # a LatencyProfile for `tether replay --mode sim`
    blocks = kv_pool_blocks("llama-3.1-8b", "H100")          # KV pool: GPU memory minus weights, in blocks
    prof = load_profile("analytic:llama-3.1-70b@H100x4")     # the same by name (tensor parallel over 4)

Everything replayed with these profiles is *simulated-analytic*: label it so wherever it is shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tether.engine.latency_profile import LatencyProfile, Roofline

# Assumptions, not measurements: dense BF16 matmuls reach ~60% of peak in serving kernels and decode reads
# reach ~80% of HBM bandwidth (a published A100 run decodes Llama-3.1-8B at ~77% of its bandwidth roofline).
FLOPS_EFFICIENCY = 0.6
BANDWIDTH_EFFICIENCY = 0.8
STEP_OVERHEAD_S = 4e-4  # scheduling, input prep, sampling launch per step (CUDA graphs for decode)
PER_SEQ_OVERHEAD_S = 2e-5
ALLREDUCE_S = 1e-5  # one small NVLink all-reduce; tensor parallelism does two per layer


@dataclass(frozen=True)
class Accelerator:
    """Datasheet figures: dense BF16 FLOP/s, HBM bytes/s, memory, host link bytes/s (PCIe, one direction)."""

    name: str
    peak_flops: float
    hbm_bytes_per_s: float
    memory_bytes: float
    host_link_bytes_per_s: float


ACCELERATORS: dict[str, Accelerator] = {a.name.lower(): a for a in [
    Accelerator("A100-40GB", 312e12, 1.555e12, 40e9, 25e9),    # SXM4, PCIe 4.0 x16
    Accelerator("A100", 312e12, 2.039e12, 80e9, 25e9),         # A100-80GB SXM4
    Accelerator("H100", 989e12, 3.35e12, 80e9, 50e9),          # H100 SXM5, PCIe 5.0 x16
    Accelerator("H200", 989e12, 4.8e12, 141e9, 50e9),          # H200 SXM
]}


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only transformer's shape (Llama-style: GQA attention, gated MLP)."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False
    dtype_bytes: int = 2

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def layer_params(self) -> int:
        attn = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_heads * self.head_dim  # q, o; k, v
        return attn + 3 * self.hidden * self.intermediate  # gate, up, down

    @property
    def params(self) -> int:
        embed = self.vocab * self.hidden
        return self.layers * self.layer_params + embed * (1 if self.tied_embeddings else 2)

    @property
    def weight_bytes(self) -> float:
        return self.params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes


MODELS: dict[str, ModelShape] = {m.name: m for m in [
    ModelShape("llama-3.1-8b", 32, 4096, 32, 8, 14336, 128256),
    ModelShape("llama-3.1-70b", 80, 8192, 64, 8, 28672, 128256),
    ModelShape("smollm2-135m", 30, 576, 9, 3, 1536, 49152, tied_embeddings=True),
]}


def _get(table: dict, name: str, what: str):
    try:
        return table[name.lower()]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; known: {', '.join(v.name for v in table.values())}") from None


def roofline(model: ModelShape, flops_per_s: float, bytes_per_s: float) -> Roofline:
    """The step cost of ``model`` on a device achieving these rates (all its shards together)."""
    return Roofline(flops_per_token=2.0 * model.layers * model.layer_params,
                    flops_per_seq=2.0 * model.hidden * model.vocab,  # the LM head, for the sampled row
                    attn_flops_per_pair=4.0 * model.layers * model.heads * model.head_dim,  # QK^T and PV
                    weight_bytes=model.weight_bytes, kv_bytes_per_token=model.kv_bytes_per_token,
                    flops_per_s=flops_per_s, bytes_per_s=bytes_per_s)


def analytic_profile(model: str | ModelShape, accelerator: str | Accelerator, tp: int = 1, block_size: int = 16,
                     flops_efficiency: float = FLOPS_EFFICIENCY,
                     bandwidth_efficiency: float = BANDWIDTH_EFFICIENCY) -> LatencyProfile:
    """A roofline ``LatencyProfile`` of ``model`` on ``tp`` x ``accelerator`` (tensor parallel).

        analytic_profile("llama-3.1-70b", "H100", tp=4).step_time([1] * 32, [8000] * 32)
    """
    m = model if isinstance(model, ModelShape) else _get(MODELS, model, "model")
    a = accelerator if isinstance(accelerator, Accelerator) else _get(ACCELERATORS, accelerator, "accelerator")
    if tp < 1:
        raise ValueError(f"tp must be >= 1, got {tp}")
    if not (0 < flops_efficiency <= 1 and 0 < bandwidth_efficiency <= 1):
        raise ValueError("efficiencies are fractions of peak in (0, 1]")
    base = STEP_OVERHEAD_S + (2 * m.layers * ALLREDUCE_S if tp > 1 else 0.0)
    block_bytes = m.kv_bytes_per_token * block_size
    return LatencyProfile(
        name=f"analytic:{m.name}@{a.name}" + (f"x{tp}" if tp > 1 else ""), base_s=base, per_seq_s=PER_SEQ_OVERHEAD_S,
        per_token_s=0.0, roofline=roofline(m, a.peak_flops * flops_efficiency * tp,
                                           a.hbm_bytes_per_s * bandwidth_efficiency * tp),
        copy_s_per_block=block_bytes / (a.host_link_bytes_per_s * tp),  # each shard copies its part at once
        meta={"kind": "simulated-analytic", "model": m.name, "accelerator": a.name, "tp": tp,
              "flops_efficiency": flops_efficiency, "bandwidth_efficiency": bandwidth_efficiency,
              "params": m.params, "weight_gb": m.weight_bytes / 1e9})


def kv_pool_blocks(model: str | ModelShape, accelerator: str | Accelerator, tp: int = 1, block_size: int = 16,
                   memory_utilization: float = 0.9, activation_reserve_gb: float = 2.0) -> int:
    """KV blocks that fit: ``memory_utilization`` of the GPUs' memory, minus the weights and an activation
    reserve per GPU, over the bytes of one block (vLLM sizes its pool the same way).

        kv_pool_blocks("llama-3.1-8b", "A100")   # 25,720 blocks of 16 tokens (411k tokens) on one 80 GB A100
    """
    m = model if isinstance(model, ModelShape) else _get(MODELS, model, "model")
    a = accelerator if isinstance(accelerator, Accelerator) else _get(ACCELERATORS, accelerator, "accelerator")
    free = tp * (a.memory_bytes * memory_utilization - activation_reserve_gb * 1e9) - m.weight_bytes
    blocks = int(free // (m.kv_bytes_per_token * block_size))
    if blocks < 1:
        raise ValueError(f"{m.name} ({m.weight_bytes / 1e9:.0f} GB of weights) does not fit on {tp} x {a.name}; "
                         f"use more tensor parallelism")
    return blocks


def load_profile(spec: str | Path) -> LatencyProfile:
    """A profile from a JSON file, or an analytic one by name: ``analytic:MODEL@ACCELERATOR[xTP]``.

        load_profile("analytic:llama-3.1-8b@H200"); load_profile("workloads/profiles/cpu-smollm2-135m.json")
    """
    text = str(spec)
    if not text.startswith("analytic:"):
        return LatencyProfile.load(text)
    match = re.fullmatch(r"analytic:([\w.-]+)@([\w-]+?)(?:x(\d+))?", text)
    if not match:
        raise ValueError(f"{text!r}: expected analytic:MODEL@ACCELERATOR[xTP], e.g. analytic:llama-3.1-70b@H100x4")
    return analytic_profile(match.group(1), match.group(2), tp=int(match.group(3) or 1))
