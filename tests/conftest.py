"""Shared fixtures: a tiny random-weight Llama built in-process, and the default model."""

from __future__ import annotations

import os

import pytest
import torch

from tiny_model import tiny_llama

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_model():
    return tiny_llama()


@pytest.fixture(scope="session")
def default_model():
    """The real default model (SmolLM2-135M-Instruct), loaded once per session."""
    from tether.engine.model_loader import load_model
    return load_model("default")
