"""tether.kernels: Triton kernels for paged attention and KV movement, each with a plain-torch reference.

    from tether.kernels import paged_attention, store_kv, rope_shift, copy_blocks

Dispatch (``ops.py``) picks Triton on CUDA tensors and the reference on CPU.
"""

from tether.kernels.ops import backend_for, copy_blocks, paged_attention, rope_shift, store_kv

__all__ = ["backend_for", "copy_blocks", "paged_attention", "rope_shift", "store_kv"]
