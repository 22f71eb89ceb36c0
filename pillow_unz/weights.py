"""The shipped models: one safetensors file holding a colour (RGB) and a grayscale model.

Each model's tensors are stored under "rgb." or "gray.": the photo tool's (photo.scale_table, the
base scale index of every context cell, and photo.constants, the pixel model's parameters at
every pixel) and the learned photo tool's context networks (net0., net1., ...: integers, see
context_network.py), which coding reads with numpy alone, and the network's, which only adapted
files and training need (built with torch on first use). The metadata holds each network's config as
JSON and how it was trained. The file's SHA-256, taken with the pixel model's revision,
identifies the models in every .unz header, so a file never decodes with models other than those
that coded it. Earlier releases' weights files stay in the package under their model ids
(earlier_weights_name), so that retraining a network leaves every file written before decodable;
each is kept as what it holds that the file which replaced it does not (kept_difference), since a
retrained network or two is all that tells two releases apart.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from safetensors.numpy import load, save

from . import _coder
from .codec import PhotoModel
from .context_network import ContextNetwork

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

    from .model import UnzNet

DEFAULT_WEIGHTS = "unz-default.safetensors"
MODEL_KEYS = {3: "rgb", 1: "gray"}  # by number of colour channels
PHOTO = "photo."  # prefix of the photo tool's tensors within a model's
CONTEXT_NETWORK = "net"  # prefix of the k-th context network's tensors within a model's: net<k>.
# The metadata of a kept weights file: the model id of the file that replaced it, whose tensors
# it leaves out where they are the same; its own tensors' names; its own metadata.
SUCCESSOR, TENSORS, METADATA = "kept.successor", "kept.tensors", "kept.metadata"


@dataclass(frozen=True)
class ModelSet:
    photo: dict[int, PhotoModel]  # by number of channels
    model_id: bytes  # model_id_of(the weights file)
    metadata: dict[str, str]
    data: bytes = field(repr=False)  # the weights file, whose networks network() builds
    _networks: dict[int, UnzNet] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def for_channels(self, channels: int) -> PhotoModel:
        return self.photo[channels]

    def network(self, channels: int) -> UnzNet:
        """The network of the `channels` model, float64, built once (this imports torch)."""
        with self._lock:
            if channels not in self._networks:
                networks, _ = read_networks(self.data)
                self._networks.update({c: m.double().eval().requires_grad_(False) for c, m in networks.items()})
            return self._networks[channels]


def model_id_of(data: bytes) -> bytes:
    """What identifies the models in a file header: the weights and the pixel model's revision."""
    revision = _coder.PIXEL_MODEL_REVISION.to_bytes(4, "little")
    return hashlib.sha256(data + revision).digest()[:8]


def _header(data: bytes) -> tuple[dict, int]:
    """A safetensors file's JSON header, and where the tensors' data begins."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]), 8 + size


def file_metadata(data: bytes) -> dict[str, str]:
    """The metadata of a safetensors file's bytes (weights files and training runs')."""
    return _header(data)[0].get("__metadata__", {})


def read_networks(data: bytes) -> tuple[dict[int, UnzNet], dict[str, str]]:
    """The networks a weights file holds (any of colour and grayscale), float32, and its metadata."""
    import torch

    from .model import ModelConfig, UnzNet

    metadata, tensors = file_metadata(data), load(data)
    networks = {}
    for channels, key in MODEL_KEYS.items():
        if f"{key}.config" not in metadata:
            continue
        network = UnzNet(ModelConfig(**json.loads(metadata[f"{key}.config"])))
        prefix = key + "."
        network.load_state_dict({name[len(prefix) :]: torch.from_numpy(t) for name, t in tensors.items()
                                 if name.startswith(prefix) and not name.startswith((prefix + PHOTO, prefix + CONTEXT_NETWORK))})
        networks[channels] = network
    return networks, metadata


def parse_models(data: bytes) -> ModelSet:
    """The codec's models from the bytes of a weights file."""
    tensors, photo = load(data), {}
    for channels, key in MODEL_KEYS.items():
        table, constants = (tensors.get(f"{key}.{PHOTO}{name}") for name in ("scale_table", "constants"))
        if table is None or constants is None:
            raise ValueError(f"weights file lacks the {key} model's photo tables")
        if table.shape[0] != channels or constants.shape != (_coder.num_param_planes(channels),):
            raise ValueError(f"weights file's {key} photo tables have the wrong shape")
        networks = []
        while f"{key}.{CONTEXT_NETWORK}{len(networks)}.shifts" in tensors:
            network = ContextNetwork.from_tensors(tensors, f"{key}.{CONTEXT_NETWORK}{len(networks)}.")
            if network.channels != channels:
                raise ValueError(f"weights file's {key} context network has the wrong shape")
            networks.append(network)
        photo[channels] = PhotoModel(np.ascontiguousarray(table, np.int32), np.ascontiguousarray(constants, np.int32),
                                     context_networks=tuple(networks))
    return ModelSet(photo, model_id_of(data), file_metadata(data), data)


def serialize_models(networks: dict[int, UnzNet], photo: dict[int, PhotoModel], metadata: dict[str, str]) -> bytes:
    """Weights-file bytes: for each model, its photo tables and its network (float32 tensors,
    config in the metadata)."""
    tensors, meta = {}, dict(metadata)
    for channels, network in networks.items():
        key = MODEL_KEYS[channels]
        meta[f"{key}.config"] = json.dumps(network.config.to_dict())
        for name, t in network.state_dict().items():
            tensors[f"{key}.{name}"] = t.detach().float().contiguous().cpu().numpy()
        tensors[f"{key}.{PHOTO}scale_table"] = photo[channels].scale_table.astype(np.int32)
        tensors[f"{key}.{PHOTO}constants"] = photo[channels].constants.astype(np.int32)
        for k, network in enumerate(photo[channels].context_networks):
            tensors.update(network.to_tensors(f"{key}.{CONTEXT_NETWORK}{k}."))
    return canonical(save(tensors, metadata=meta))


def canonical(data: bytes) -> bytes:
    """safetensors bytes with the header's keys in sorted order. safetensors writes the metadata's
    keys in no fixed order, and the file's hash is the model id: the same models must give the
    same bytes. (The tensors' data stays where it was: the header's offsets count from its end.)"""
    header, start = _header(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors aligns the data to 8 bytes
    return len(text).to_bytes(8, "little") + text + data[start:]


def kept_difference(data: bytes, successor: bytes) -> bytes:
    """How the package keeps the weights file `data` once `successor` has replaced it: the
    tensors that `successor` lacks or holds otherwise, and what rebuilds the rest (kept_whole)."""
    tensors, theirs = load(data), load(successor)
    differing = {name: t for name, t in tensors.items()
                 if name not in theirs or theirs[name].dtype != t.dtype or not np.array_equal(theirs[name], t)}
    metadata = {SUCCESSOR: model_id_of(successor).hex(), TENSORS: json.dumps(sorted(tensors)),
                METADATA: json.dumps(file_metadata(data), sort_keys=True)}
    return canonical(save(differing, metadata=metadata))


def kept_whole(kept: bytes, successor: bytes) -> bytes:
    """The weights file that kept_difference(data, successor) keeps: `data` again, byte for byte
    (safetensors lays tensors out by type and name, canonical the header)."""
    meta, tensors, theirs = file_metadata(kept), load(kept), load(successor)
    whole = {name: tensors[name] if name in tensors else theirs[name] for name in json.loads(meta[TENSORS])}
    return canonical(save(whole, metadata=json.loads(meta[METADATA])))


_lock = threading.Lock()
_loaded: dict[str, ModelSet] = {}


def _load(key: str, read: Callable[[], bytes]) -> ModelSet:
    """The models of a file, parsed once per process (key: where it lies)."""
    with _lock:
        if key not in _loaded:
            _loaded[key] = parse_models(read())
        return _loaded[key]


def _shipped(name: str) -> Traversable:
    """A file of the package's weights folder."""
    return resources.files("pillow_unz._weights").joinpath(name)


def load_models(path: str | Path | None = None) -> ModelSet:
    """The shipped models (or those of `path`), loaded once per process."""
    if path is None:
        return _load(f"package:{DEFAULT_WEIGHTS}", _shipped(DEFAULT_WEIGHTS).read_bytes)
    return _load(str(path), Path(path).read_bytes)


def earlier_weights_name(model_id: bytes) -> str:
    """The name under which the package keeps an earlier release's weights file."""
    return f"unz-{model_id.hex()}.safetensors"


def models_for(model_id: bytes) -> ModelSet | None:
    """The models of a file's model id: the shipped ones, or an earlier release's that the
    package keeps so that files written before its networks were retrained still decode
    (None: neither). An earlier file whose bytes no longer give its name's id (the pixel model's
    revision changed since, and with it every id) codes nothing this release can decode."""
    return _models_for(model_id, ())


def _models_for(model_id: bytes, newer: tuple[bytes, ...]) -> ModelSet | None:
    """models_for, where `newer` kept files named this id as their successor (one of them
    again would be a loop, which no package writes)."""
    current = load_models()
    if model_id == current.model_id:
        return current
    name = earlier_weights_name(model_id)
    key = f"package:{name}"
    if key not in _loaded:
        if model_id in newer or not _shipped(name).is_file():
            return None
        data = _shipped(name).read_bytes()
        successor_id = file_metadata(data).get(SUCCESSOR)
        if successor_id is not None:  # kept as its difference to the file that replaced it
            successor = _models_for(bytes.fromhex(successor_id), (*newer, model_id))
            if successor is None:
                return None
            data = kept_whole(data, successor.data)
        _load(key, lambda: data)
    models = _loaded[key]
    return models if models.model_id == model_id else None
