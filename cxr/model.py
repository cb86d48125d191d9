"""Build a timm backbone from its config; save and load ``config.json`` + ``model.safetensors``."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cxr.data import LABELS, Preprocessing

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# An ensemble folder: its members in subfolders (each a weights folder) and this file, a ModelConfig
# whose temperature, bias and threshold calibrate the members' mean calibrated logit.
ENSEMBLE_NAME = "ensemble.json"


class ModelLoadError(RuntimeError):
    """A weights folder that cannot be loaded; the message names the file and the problem."""


@dataclass
class ModelConfig:
    """Everything needed to rebuild, preprocess for and interpret a trained model."""

    architecture: str
    in_chans: int = 1
    input_size: int = 224
    mean: float = 0.5
    std: float = 0.25
    labels: list[str] = field(default_factory=lambda: list(LABELS))
    threshold: float = 0.5
    temperature: float = 1.0
    logit_bias: float = 0.0  # calibrated P = sigmoid(logit / temperature + logit_bias)
    weights_sha256: str = ""
    train: dict = field(default_factory=dict)
    val_metrics: dict = field(default_factory=dict)
    stress_metrics: dict = field(default_factory=dict)  # the shift-stress bank at the shipped threshold
    calibration: dict = field(default_factory=dict)  # how temperature, bias and threshold were chosen
    ood: dict = field(default_factory=dict)  # out-of-distribution check (cxr.ood), if fitted
    members: list[str] = field(default_factory=list)  # an ensemble's member subfolders (ensemble.json)

    @classmethod
    def from_json(cls, path: str | Path) -> ModelConfig:
        try:
            data = json.loads(Path(path).read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError) as error:
            raise ModelLoadError(f"{path}: not a valid model config ({error})") from error

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


def same_split(a: ModelConfig, b: ModelConfig) -> bool:
    """Whether two models were validated on one split: its seed, fraction and patients."""
    keys = ("seed", "val_fraction", "val_patients")
    return all(a.train["split"].get(k) == b.train["split"].get(k) for k in keys)


def is_ensemble(folder: str | Path) -> bool:
    return (Path(folder) / ENSEMBLE_NAME).is_file()


def build_model(config: ModelConfig) -> torch.nn.Module:
    """A timm model by name with one output logit (pneumonia) and our data config attached."""
    channels = config.in_chans
    overlay = {
        "input_size": (channels, config.input_size, config.input_size),
        "mean": (config.mean,) * channels,
        "std": (config.std,) * channels,
    }
    kwargs = dict(pretrained=False, num_classes=1, in_chans=channels, pretrained_cfg_overlay=overlay)
    try:
        try:  # transformers fix their grid at build time; convolutional nets take no img_size
            return timm.create_model(config.architecture, img_size=config.input_size, **kwargs)
        except TypeError:
            return timm.create_model(config.architecture, **kwargs)
    except RuntimeError as error:  # timm's "Unknown model (...)"
        raise ModelLoadError(f"unknown backbone {config.architecture!r}: {error}") from error


def preprocessing_for(model: torch.nn.Module) -> Preprocessing:
    """The model's preprocessing, derived from the data config that travels with it."""
    data_config = timm.data.resolve_model_data_config(model)
    channels, _, size = data_config["input_size"]
    return Preprocessing(input_size=size, mean=data_config["mean"][0], std=data_config["std"][0], in_chans=channels)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(
    model: torch.nn.Module, config: ModelConfig, folder: str | Path, dtype: torch.dtype = torch.float16
) -> Path:
    """Write ``model.safetensors`` (floats stored as ``dtype``) and ``config.json`` with its sha256."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        name: (tensor.to(dtype) if tensor.is_floating_point() else tensor).contiguous()
        for name, tensor in model.state_dict().items()
    }
    weights = folder / WEIGHTS_NAME
    save_file(state, weights, metadata={"format": "pt", "architecture": config.architecture})
    config.weights_sha256 = sha256_file(weights)
    config.to_json(folder / CONFIG_NAME)
    return folder


def load_model(folder: str | Path) -> tuple[torch.nn.Module, ModelConfig]:
    """Load a weights folder strictly: sha256 checked, every key present, float32, eval mode."""
    folder = Path(folder)
    config = ModelConfig.from_json(folder / CONFIG_NAME)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelLoadError(f"{weights}: file not found")
    if config.weights_sha256 and sha256_file(weights) != config.weights_sha256:
        raise ModelLoadError(f"{weights}: sha256 does not match {folder / CONFIG_NAME}")
    try:
        model = build_model(config)
    except ModelLoadError as error:
        raise ModelLoadError(f"{folder / CONFIG_NAME}: {error}") from None
    try:
        state = load_file(weights)
    except (SafetensorError, OSError) as error:
        raise ModelLoadError(f"{weights}: not a readable safetensors file ({error})") from error
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    problem = _state_mismatch(model.state_dict(), state)
    if problem:
        raise ModelLoadError(f"{weights}: does not match {config.architecture!r} in {folder / CONFIG_NAME}: {problem}")
    model.load_state_dict(state, strict=True)
    log.info("Loaded %s from %s", config.architecture, folder)
    return model.eval().to(memory_format=torch.channels_last), config


def _state_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """One line on how a state dict differs from the model's, or "" when every key and shape fits."""
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    reshaped = sorted(k for k in expected.keys() & found.keys() if expected[k].shape != found[k].shape)
    if not (missing or unexpected or reshaped):
        return ""
    first = (missing or unexpected or reshaped)[0]
    return (
        f"{len(missing)} tensors missing, {len(unexpected)} unexpected, {len(reshaped)} of another shape "
        f"(first: {first})"
    )


def freeze_before(model: torch.nn.Module, module_name: str) -> int:
    """Stop gradients for every parameter registered before ``module_name``; returns how many."""
    params = list(model.named_parameters())
    first = next((i for i, (name, _) in enumerate(params) if name.startswith(module_name + ".")), None)
    if first is None:
        raise ValueError(f"{type(model).__name__} has no parameters under {module_name!r}")
    for _, param in params[:first]:
        param.requires_grad_(False)
    return first
