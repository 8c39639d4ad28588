"""``tether bench kernels`` needs CUDA; off-GPU only its guard and peak table can be checked."""

from __future__ import annotations

import pytest
import torch

from tether.kernels import bench


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_bench_refuses_without_cuda():
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        bench.main(["--json"])


@pytest.mark.parametrize("name,peak", [
    ("NVIDIA H100 80GB HBM3", 3.35e12),
    ("NVIDIA H100 PCIe", 2.0e12),
    ("NVIDIA H200", 4.8e12),
    ("NVIDIA A100-SXM4-80GB", 2.039e12),
    ("NVIDIA A100-PCIE-40GB", 1.555e12),
    ("NVIDIA L40S", 0.864e12),
    ("NVIDIA L4", 0.3e12),
    ("Some Future GPU", None),
])
def test_peak_bandwidth_table(name, peak):
    assert bench.peak_bandwidth(name) == peak
