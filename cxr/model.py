"""Build a timm backbone from its config; save and load ``config.json`` + ``model.safetensors``."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from timm.models import filter_pretrained_cfg

from cxr.data import LABELS, RESIZE, Preprocessing
from cxr.errors import ModelLoadError
from cxr.files import CONFIG_NAME, WEIGHTS_NAME, sha256_file
from cxr.fov import FieldOfView, attach

log = logging.getLogger(__name__)

# An ensemble folder: its members in subfolders (each a weights folder) and this file, a ModelConfig
# whose temperature, bias and threshold calibrate the members' mean calibrated logit.
ENSEMBLE_NAME = "ensemble.json"


# The project's own fields live under this key of config.json; the rest is timm's Hub format
# (``architecture``, ``num_classes``, ``label_names``, ``model_args``, ``pretrained_cfg``), so
# ``timm.create_model("hf-hub:org/name", pretrained=True)`` loads a pushed folder as it is.
PROJECT_KEY = "cxr"
_TIMM_FIELDS = ("architecture", "in_chans", "input_size", "mean", "std")  # kept in timm's part


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
    fov: dict = field(default_factory=dict)  # field-of-view crop (cxr.fov): its segmenter, if any
    members: list[str] = field(default_factory=list)  # an ensemble's member subfolders (ensemble.json)
    recipes: list[dict] = field(default_factory=list)  # recipes compared over seeds for this choice (cxr.recipes)

    def data_config(self) -> dict:
        """timm's data config for the preprocessing this project applies (``cxr.data.Preprocessing``)."""
        channels = self.in_chans
        return {
            "input_size": (channels, self.input_size, self.input_size),
            "mean": (self.mean,) * channels,
            "std": (self.std,) * channels,
            **RESIZE,
        }

    def pretrained_cfg(self) -> dict:
        """timm's ``pretrained_cfg`` for these weights: the backbone's defaults, our data config on top."""
        default = timm.models.get_pretrained_cfg(self.architecture) if timm.is_model(self.architecture) else None
        base = filter_pretrained_cfg(default.to_dict(), remove_source=True) if default else {}
        for key in ("tag", "license", "label_names", "label_descriptions", "test_input_size", "test_crop_pct"):
            base.pop(key, None)  # describe the ImageNet checkpoint, not these weights
        if base.get("input_size") and tuple(base["input_size"][1:]) != (self.input_size, self.input_size):
            base["pool_size"] = None
        cfg = {**base, **self.data_config(), "num_classes": 1, "custom_load": False}
        cfg.pop("architecture", None)  # timm keeps it at the top level only
        return json.loads(json.dumps(cfg))  # tuples as lists, as timm writes them

    def to_dict(self) -> dict:
        """config.json: timm's Hub format, the project's fields under ``PROJECT_KEY``."""
        project = {k: v for k, v in asdict(self).items() if k not in _TIMM_FIELDS}
        if not project["recipes"]:  # written only once a comparison is recorded: older folders stay as they were
            del project["recipes"]
        return {
            "architecture": self.architecture,
            "num_classes": 1,
            "label_names": self.labels[1:],  # one logit: the log-odds of labels[1]
            "model_args": {"num_classes": 1, "in_chans": self.in_chans},
            "pretrained_cfg": self.pretrained_cfg(),
            PROJECT_KEY: project,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Read config.json as :meth:`to_dict` writes it; a preprocessing we do not apply is refused."""
        cfg = data["pretrained_cfg"]
        channels, height, width = cfg["input_size"]
        if unsupported := unsupported_resize(cfg):
            raise ValueError(f"pretrained_cfg asks for {unsupported}; this project preprocesses with {RESIZE}")
        if height != width or len(set(cfg["mean"])) != 1 or len(set(cfg["std"])) != 1:
            raise ValueError("pretrained_cfg must describe a square input and one mean and std for every channel")
        if data.get("num_classes") != 1:
            raise ValueError(f"num_classes={data.get('num_classes')!r}; these models have one logit")
        timm_part = {"architecture": data["architecture"], "in_chans": channels, "input_size": height}
        return cls(**timm_part, mean=cfg["mean"][0], std=cfg["std"][0], **data[PROJECT_KEY])

    @classmethod
    def from_json(cls, path: str | Path) -> ModelConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise ModelLoadError(f"{path}: not a valid model config ({type(error).__name__}: {error})") from error

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def same_split(a: ModelConfig, b: ModelConfig) -> bool:
    """Whether two models were validated on one split: its seed, fraction and patients."""
    keys = ("seed", "val_fraction", "val_patients")
    return all(a.train["split"].get(k) == b.train["split"].get(k) for k in keys)


def is_ensemble(folder: str | Path) -> bool:
    return (Path(folder) / ENSEMBLE_NAME).is_file()


def build_model(config: ModelConfig) -> torch.nn.Module:
    """A timm model by name with one output logit (pneumonia) and our data config attached."""
    if not timm.is_model(config.architecture):
        raise ModelLoadError(f"unknown backbone {config.architecture!r}: timm has no model of that name")
    kwargs = {}
    if config.pretrained_cfg().get("fixed_input_size"):  # transformers fix their grid at build time
        kwargs["img_size"] = config.input_size
    return timm.create_model(
        config.architecture,
        pretrained=False,
        num_classes=1,
        in_chans=config.in_chans,
        pretrained_cfg_overlay=config.data_config(),
        **kwargs,
    )


def unsupported_resize(data_config: dict) -> dict:
    """The resize settings of a timm data config that differ from the one this project applies."""
    return {key: data_config.get(key) for key, value in RESIZE.items() if data_config.get(key) != value}


def preprocessing_for(model: torch.nn.Module) -> Preprocessing:
    """The model's preprocessing, derived from the data config that travels with it."""
    data_config = timm.data.resolve_model_data_config(model)
    if unsupported := unsupported_resize(data_config):
        raise ModelLoadError(f"{type(model).__name__} asks for {unsupported}; this project resizes with {RESIZE}")
    channels, _, size = data_config["input_size"]
    return Preprocessing(input_size=size, mean=data_config["mean"][0], std=data_config["std"][0], in_chans=channels)


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
    attach(model, FieldOfView.for_weights(folder, config.fov))  # preprocessing travels with the model
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


def module_before(model: torch.nn.Module, module_name: str) -> str | None:
    """The sibling registered just before ``module_name`` (``blocks.3`` for ``blocks.4``), or None.

    With ``freeze_before(model, module_name)`` it is the last stage that keeps its starting weights:
    the out-of-population check pools it, so its features stay ImageNet's, not the fine-tune's.
    """
    parent, _, child = module_name.rpartition(".")
    names = [name for name, _ in model.get_submodule(parent).named_children()]
    index = names.index(child)
    return f"{parent}.{names[index - 1]}".lstrip(".") if index > 0 else None


def freeze_before(model: torch.nn.Module, module_name: str) -> int:
    """Stop gradients for every parameter registered before ``module_name``; returns how many."""
    params = list(model.named_parameters())
    first = next((i for i, (name, _) in enumerate(params) if name.startswith(module_name + ".")), None)
    if first is None:
        raise ValueError(f"{type(model).__name__} has no parameters under {module_name!r}")
    for _, param in params[:first]:
        param.requires_grad_(False)
    return first
