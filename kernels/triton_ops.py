"""Triton implementations of the ``tether.kernels`` ops, imported lazily by ``ops._triton()``.

Same signatures and semantics as ``tether.kernels.reference``; the kernels live
by concern in ``triton_attention`` (paged attention) and ``triton_kv`` (KV
writes, RoPE shifts and block copies). Importing this module decorates the
kernels, so ``TRITON_INTERPRET=1`` must be set before it to run them on CPU.
"""

from tether.kernels.triton_attention import paged_attention
from tether.kernels.triton_kv import copy_blocks, rope_shift, store_kv

__all__ = ["copy_blocks", "paged_attention", "rope_shift", "store_kv"]
