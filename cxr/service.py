"""The one answer every door of the server gives (the UI, gradio_client, HTTP/JSON, MCP).

A :class:`Screening` holds the models a server offers, loads each once, and turns an uploaded file
into the answer record API clients get. The doors differ only in how the file arrives and how the
answer is written out.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path

from PIL import Image

from cxr.errors import ImageReadError
from cxr.inference import Prediction, Predictor, folder_sha256
from cxr.io import read_xray
from cxr.model import CONFIG_NAME, ENSEMBLE_NAME, ModelConfig, is_ensemble

log = logging.getLogger(__name__)


class UnknownModelError(ValueError):
    """A model name the server does not offer; the message lists the ones it does."""


class Screening:
    """The models on offer (name → weights folder, the default first) and the answer to one file."""

    def __init__(self, models: dict[str, Path]):
        if not models:
            raise ValueError("no models to serve")
        self.models = dict(models)
        self.default = next(iter(self.models))
        self._predictors: dict[str, Predictor] = {}
        self._loading = threading.Lock()  # two first requests for one model load it once
        self.ready = threading.Event()  # set once the default model has answered (warm)

    def predictor(self, name: str | None = None) -> Predictor:
        """The loaded model ``name`` (default: the default), loaded on first use."""
        name = name or self.default
        if name not in self.models:
            raise UnknownModelError(f"Unknown model {name!r}; choose one of: {', '.join(self.models)}.")
        with self._loading:
            if name not in self._predictors:
                self._predictors[name] = Predictor.from_folder(self.models[name])
        return self._predictors[name]

    def warm_up(self) -> None:
        """Load the default model and answer once on a blank image, so the first real request doesn't
        pay for the lazy set-up of torch's kernels; logs what each part of the start took."""
        started = time.perf_counter()
        predictor = self.predictor()
        loaded = time.perf_counter()
        predictor.explain(Image.new("L", (1024, 816), 128))
        log.info(
            "%s loaded in %.2f s, first answer in %.2f s", self.default, loaded - started, time.perf_counter() - loaded
        )
        self.ready.set()

    def screen(
        self, path: str | Path, model: str | None = None, cam: bool = True
    ) -> tuple[Prediction, Image.Image | None, dict]:
        """A file → (prediction, Grad-CAM overlay or None, the answer record).

        No overlay without ``cam``, and none for a NOT_ASSESSED image: a map would explain a decision
        that is not given. Raises :class:`ImageReadError` or :class:`UnknownModelError` with a message
        for the user.
        """
        if not path:
            raise ImageReadError("Upload a chest X-ray image first.")
        image = read_xray(path)
        name = model or self.default
        predictor = self.predictor(name)
        if cam:
            prediction, overlay = predictor.explain(image)
            # Gradio stores a returned image under a hash of its bytes and writes it in place: two
            # concurrent identical answers would share a file while it is rewritten. A per-request
            # JPEG comment keeps every answer its own file.
            overlay.info["comment"] = uuid.uuid4().hex
        else:
            prediction, overlay = predictor.screen([image])[0], None
        shown = None if prediction.unusual else overlay
        return prediction, shown, prediction.record() | {"model": name, "sha256": predictor.weights_sha256}

    def describe_models(self) -> list[dict]:
        """Name, architecture, threshold and weights checksum of every model on offer, from their
        configs (listing loads no model)."""
        listed = []
        for name, folder in self.models.items():
            config = ModelConfig.from_json(folder / (ENSEMBLE_NAME if is_ensemble(folder) else CONFIG_NAME))
            listed.append(
                {
                    "name": name,
                    "architecture": config.architecture,
                    "threshold": config.threshold,
                    "sha256": folder_sha256(folder),
                    "default": name == self.default,
                }
            )
        return listed
