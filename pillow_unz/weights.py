"""The shipped models: one safetensors file holding a colour (RGB) and a grayscale model.

Tensors are stored under "rgb." and "gray."; the metadata holds each model's config as JSON and
how it was trained. The file's SHA-256, taken with the pixel model's revision, identifies the
models in every .unz header, so a file never decodes with models other than those that coded it.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from safetensors.torch import load, save

from . import _coder
from .model import ModelConfig, UnzNet

DEFAULT_WEIGHTS = "unz-default.safetensors"
MODEL_KEYS = {3: "rgb", 1: "gray"}  # by number of colour channels


@dataclass(frozen=True)
class ModelSet:
    models: dict[int, UnzNet]  # by number of channels, float64, eval mode
    model_id: bytes  # model_id_of(the weights file)
    metadata: dict[str, str]

    def for_channels(self, channels: int) -> UnzNet:
        return self.models[channels]


def model_id_of(data: bytes) -> bytes:
    """What identifies the models in a file header: the weights and the pixel model's revision."""
    revision = _coder.PIXEL_MODEL_REVISION.to_bytes(4, "little")
    return hashlib.sha256(data + revision).digest()[:8]


def read_models(data: bytes) -> tuple[dict[int, UnzNet], dict[str, str]]:
    """The models a weights file holds (any of colour and grayscale), float32, and its metadata."""
    header_len = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__", {})
    tensors = load(data)
    models = {}
    for channels, key in MODEL_KEYS.items():
        if f"{key}.config" not in metadata:
            continue
        model = UnzNet(ModelConfig(**json.loads(metadata[f"{key}.config"])))
        model.load_state_dict({name[len(key) + 1 :]: t for name, t in tensors.items() if name.startswith(key + ".")})
        models[channels] = model
    return models, metadata


def parse_models(data: bytes) -> ModelSet:
    """The codec's models from the bytes of a weights file: float64, for exact inference."""
    models, metadata = read_models(data)
    missing = [key for channels, key in MODEL_KEYS.items() if channels not in models]
    if missing:
        raise ValueError(f"weights file lacks the {', '.join(missing)} model")
    exact = {c: m.double().eval().requires_grad_(False) for c, m in models.items()}
    return ModelSet(exact, model_id_of(data), metadata)


def serialize_models(models: dict[int, UnzNet], metadata: dict[str, str]) -> bytes:
    """Weights-file bytes (float32 tensors, configs in the metadata) for any of the models."""
    tensors, meta = {}, dict(metadata)
    for channels, model in models.items():
        key = MODEL_KEYS[channels]
        meta[f"{key}.config"] = json.dumps(model.config.to_dict())
        for name, t in model.state_dict().items():
            tensors[f"{key}.{name}"] = t.detach().float().contiguous().cpu()
    return save(tensors, metadata=meta)


_lock = threading.Lock()
_loaded: dict[str, ModelSet] = {}


def load_models(path: str | Path | None = None) -> ModelSet:
    """The shipped models (or those of `path`), loaded once per process."""
    key = str(path) if path is not None else DEFAULT_WEIGHTS
    with _lock:
        if key not in _loaded:
            if path is None:
                data = resources.files("pillow_unz._weights").joinpath(DEFAULT_WEIGHTS).read_bytes()
            else:
                data = Path(path).read_bytes()
            _loaded[key] = parse_models(data)
        return _loaded[key]
