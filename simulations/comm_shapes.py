"""The adapted module shapes ``corolla comm`` counts: from a real Hugging Face architecture, built from its
``config.json`` on PyTorch's ``meta`` device (no weights, no memory, no download), or from a preset
shipped in ``simulations/comm_presets`` (``docs/communication.md §5``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ALL_7 = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PRESETS_DIR = Path(__file__).parent / "comm_presets"
PRESETS = {p.name: p for p in sorted(PRESETS_DIR.iterdir()) if (p / "config.json").is_file()}


class CommError(ValueError):
    """A user input problem; the message names the flag and the fix (``corolla comm`` exits 2)."""


def hf_module_shapes(
    config: Mapping[str, Any], targets: Sequence[str] = ALL_7
) -> dict[str, tuple[int, int]]:
    """``{"layers.{l}.{target}": (m, n)}`` for a Llama/Mistral/Gemma-style HF ``config.json``.

    Uses ``hidden_size``, ``num_attention_heads``, ``num_key_value_heads``, ``head_dim`` (default
    ``hidden_size / num_attention_heads``), ``intermediate_size`` and ``num_hidden_layers``.
    """
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    inter = int(config["intermediate_size"])
    per_layer = {
        "q_proj": (heads * head_dim, hidden),
        "k_proj": (kv_heads * head_dim, hidden),
        "v_proj": (kv_heads * head_dim, hidden),
        "o_proj": (hidden, heads * head_dim),
        "gate_proj": (inter, hidden),
        "up_proj": (inter, hidden),
        "down_proj": (hidden, inter),
    }
    unknown = [t for t in targets if t not in per_layer]
    if unknown:
        raise ValueError(f"unknown target modules {unknown}; known: {list(per_layer)}")
    return {
        f"layers.{layer}.{t}": per_layer[t]
        for layer in range(int(config["num_hidden_layers"]))
        for t in targets
    }


def resolve_config_path(path_or_preset: str | Path) -> Path:
    """The ``config.json`` for a preset name (case-insensitive) or a local file or folder."""
    name = str(path_or_preset).strip()
    if name.lower() in PRESETS:
        return PRESETS[name.lower()] / "config.json"
    path = Path(name).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise CommError(
            f"--model {name!r}: not a preset and no such file; pass one of {', '.join(PRESETS)} "
            "or the path to a local Hugging Face config.json (or the folder holding it)"
        )
    return path


def load_config(path_or_preset: str | Path) -> Any:
    """A ``transformers`` config read from local files only (``local_files_only``: never downloads)."""
    from transformers import AutoConfig

    path = resolve_config_path(path_or_preset)
    try:
        return AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CommError(
            f"--model {str(path)!r}: transformers cannot read this config ({exc}); pass a Hugging Face "
            "config.json with a `model_type` this transformers version knows"
        ) from exc


def build_meta_model(config: Any) -> Any:
    """The architecture for ``config`` on the ``meta`` device: shapes only, no storage, no weights.

    A causal LM when the config has one (Llama, Mistral, Gemma-2, ...), else the bare model (BERT).
    """
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    with torch.device("meta"):
        try:
            return AutoModelForCausalLM.from_config(config)
        except ValueError:
            try:
                return AutoModel.from_config(config)
            except ValueError as exc:
                raise CommError(f"--model: transformers has no model class for this config ({exc})") from exc


def linear_shapes(model: Any, targets: Sequence[str] = ALL_7) -> dict[str, tuple[int, int]]:
    """``{qualified name: (out_features, in_features)}`` of the linear layers whose last name part is
    in ``targets`` (``nn.Linear``, and GPT-2's transposed ``Conv1D``), in module order."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    shapes: dict[str, tuple[int, int]] = {}
    seen: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            shape = (module.out_features, module.in_features)  # weight is (m, n)
        elif isinstance(module, Conv1D):
            shape = (module.nf, module.weight.shape[0])  # weight is (n, m)
        else:
            continue
        leaf = name.rsplit(".", 1)[-1]
        seen.add(leaf)
        if leaf in targets:
            shapes[name] = shape
    missing = [t for t in targets if not any(n.rsplit(".", 1)[-1] == t for n in shapes)]
    if missing:
        raise CommError(
            f"--targets: {', '.join(missing)} match{'es' if len(missing) == 1 else ''} no linear layer "
            f"of {type(model).__name__}; "
            f"its linear layers are named {', '.join(sorted(seen))}; pass e.g. --targets "
            + ",".join(t for t in ("q_proj", "v_proj", "query", "value", "c_attn") if t in seen)
        )
    return shapes


def module_shapes_from_config(
    path_or_preset: str | Path, targets: Sequence[str] = ALL_7
) -> dict[str, tuple[int, int]]:
    """``{qualified name: (m, n)}`` of the adapted modules of a preset or a local ``config.json``.

    E.g. ``gemma-2-9b``: ``model.layers.0.self_attn.q_proj -> (4096, 3584)``, 42 layers x 7 = 294.
    """
    return linear_shapes(build_meta_model(load_config(path_or_preset)), targets)
