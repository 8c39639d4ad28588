"""Kernel tests run the Triton kernels natively on a GPU, else in Triton's interpreter on CPU.

``@triton.jit`` picks interpreter mode when ``tether.kernels.triton_ops`` is first
imported, so TRITON_INTERPRET is set here, before any test module imports it
(``ops._triton()`` makes the same choice on machines without CUDA). The tests
call ``triton_ops`` directly and never set TETHER_KERNELS globally; dispatch
tests use ``monkeypatch``.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
