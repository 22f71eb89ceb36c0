"""Per-image LoRA tuning: `unz-finetune --lora IMG` and `img.save("x.unz", lora=True)`.

PEFT wraps the decoder's convolutions and attention projections with low-rank adapters, which
are trained on the one image to minimise its code length plus the adapter's own (the minimum
description length trade). The adapted layers compute exactly what pillow_unz.adapter.apply
merges for decoding: the base weight plus lora_delta, rounded to the weight grid. Only the
decoder is adapted, from z = 0 (pillow_unz/adapter.py says why). An adapted group's photo bands
take the adapted network's parameter planes instead of the model's constants; each plane group's
adapter is stored only if the group's coded bytes shrink by more than the adapter costs.
"""
from __future__ import annotations

import copy
import random
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pillow_unz import _coder, adapter as adapters, api, codec, format as fmt, pixelmodel, tools
from pillow_unz.context_network import ContextNetwork
from pillow_unz.fixedpoint import QConv2d, QConvTranspose2d, WEIGHT_BITS
from pillow_unz.model import UnzNet
from pillow_unz.weights import ModelSet, load_models

try:
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora.layer import LoraLayer
except ImportError as e:  # an optional extra: decoding adapted files never needs it
    raise ImportError("per-image LoRA tuning needs PEFT: pip install 'pillow-unz[lora]'") from e

DEFAULT_RANK = 4
# The full-resolution path: tuning every decoder layer saved no more on the evaluation photos,
# and the 3x3 convolutions' A factors cost hundreds of bytes.
DEFAULT_TARGETS = ("up", "head")
DEFAULT_STEPS = 150
DEFAULT_EFFORT = 9  # the last few percent: the strongest coding, then the adapter
LEARNING_RATE = 1e-2
# Larger images train on a random band of about this many pixels per step.
STEP_PIXELS = 1 << 18
ADAPTER = "unz"


@dataclass
class LoraSettings:
    rank: int = DEFAULT_RANK
    steps: int | None = None  # stop after this many steps ...
    seconds: float | None = None  # ... or this many seconds, whichever comes first
    device: str = "cpu"  # where training runs; coding is exact on any device
    targets: tuple[str, ...] = DEFAULT_TARGETS  # names of pillow_unz.adapter.adaptable_layers

    def __post_init__(self) -> None:
        if self.steps is None and self.seconds is None:  # a time budget alone replaces the steps
            self.steps = DEFAULT_STEPS
        # Refused here, before any tuning starts, with a message instead of torch's traceback.
        if (self.steps is not None and self.steps < 0) or (self.seconds is not None and self.seconds < 0):
            raise ValueError("LoRA steps and seconds must not be negative")
        try:
            torch.empty(0, device=self.device)
        except (RuntimeError, AssertionError) as e:
            raise ValueError(f"cannot train on device {self.device!r}: {e}") from None


@dataclass
class GroupReport:
    channels: int
    base_bytes: int  # the plane group coded with the shipped model
    adapted_bytes: int  # ... with the adapted model
    adapter_bytes: int  # the adapter, coded alone
    steps: int
    seconds: float
    kept: bool = False  # whether the file holds it


@dataclass
class LoraResult:
    data: bytes  # the .unz file
    groups: list[GroupReport] = field(default_factory=list)

    @property
    def kept(self) -> bool:
        return any(g.kept for g in self.groups)


class ExactLoraLayer(nn.Module, LoraLayer):
    """LoRA for pillow-unz's fixed-point convolutions: the base layer runs with its weight plus
    lora_delta and its bias plus lora_shift, so training sees the rounding that decoding will
    apply (straight through)."""

    adapter_layer_names = LoraLayer.adapter_layer_names + ("lora_shift",)

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: LoraConfig, r: int = 0, lora_alpha: int = 1, **kwargs) -> None:
        super().__init__()
        LoraLayer.__init__(self, base_layer)
        self.lora_shift = nn.ParameterDict()
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, r, lora_alpha, config)

    def update_layer(self, adapter_name: str, r: int, lora_alpha: int, config: LoraConfig, **kwargs) -> None:
        if lora_alpha != r:
            raise ValueError("pillow-unz adapters have no scaling: lora_alpha must equal r")
        base = self.get_base_layer()
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = lora_alpha
        self.scaling[adapter_name] = 1.0
        self.lora_dropout[adapter_name] = nn.Identity()
        self.lora_bias[adapter_name] = False
        self.use_dora[adapter_name] = False
        (_, fan), (rows, _), *_ = adapters.factor_shapes(base, r)
        self.lora_A[adapter_name] = nn.Linear(fan, r, bias=False)
        self.lora_B[adapter_name] = nn.Linear(r, rows, bias=False)
        if base.bias is not None:
            self.lora_shift[adapter_name] = nn.Parameter(torch.zeros_like(base.bias))
        self.reset_lora_parameters(adapter_name, config.init_lora_weights)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        base = self.get_base_layer()
        params = {"weight": base.weight, "bias": base.bias}
        if not self.disable_adapters:
            for name in self.active_adapters:
                if name in self.lora_A:
                    params["weight"] = params["weight"] + adapters.lora_delta(
                        base.weight, self.lora_A[name].weight, self.lora_B[name].weight
                    )
                if name in self.lora_shift:
                    params["bias"] = params["bias"] + adapters.quantize_factor(self.lora_shift[name])
        return torch.func.functional_call(base, params, (x,))

    def factors(self) -> list[torch.Tensor]:
        """A, B and the shift, as pillow_unz.adapter stores them (unquantized)."""
        shift = [self.lora_shift[ADAPTER]] if ADAPTER in self.lora_shift else []
        return [self.lora_A[ADAPTER].weight, self.lora_B[ADAPTER].weight] + shift


def wrap(model: UnzNet, rank: int, targets: tuple[str, ...]) -> UnzNet:
    """A float32 copy of `model` whose `targets` carry trainable LoRA adapters (all else frozen)."""
    model = copy.deepcopy(model).float().requires_grad_(False)
    layers = adapters.adaptable_layers(model)
    unknown = set(targets) - set(layers)
    if unknown or not targets:
        raise ValueError(f"LoRA targets must be some of {', '.join(layers)}; got {', '.join(sorted(unknown)) or 'none'}")
    if not 1 <= rank <= adapters.MAX_RANK:
        raise ValueError(f"LoRA rank must be 1 to {adapters.MAX_RANK}")
    layers = {name: layers[name] for name in targets}
    capped = {name: adapters.max_rank(m) for name, m in layers.items() if adapters.max_rank(m) < rank}
    config = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=list(layers), rank_pattern=capped, alpha_pattern=capped
    )
    config._register_custom_module({QConv2d: ExactLoraLayer, QConvTranspose2d: ExactLoraLayer})
    # PEFT draws the A factors from torch's global generator: seed it here, and only here, so
    # that the same image gives the same file.
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(0)
        # PEFT warns of the transposed convolution, which ExactLoraLayer handles
        warnings.filterwarnings("ignore", "Unsupported layer type", UserWarning)
        return inject_adapter_in_model(config, model, adapter_name=ADAPTER)


def lora_layers(model: nn.Module) -> dict[str, ExactLoraLayer]:
    return {name: m for name, m in model.named_modules() if isinstance(m, ExactLoraLayer)}


def extract(model: nn.Module) -> adapters.Adapter:
    """The trained adapter as stored, in weight steps; layers it leaves unchanged are left out."""
    result = []
    for name, layer in lora_layers(model).items():
        a, b, *shift = (
            (adapters.quantize_factor(f.detach().cpu().double()) * 2**WEIGHT_BITS).round().int().numpy()
            for f in layer.factors()
        )
        if (b @ a).any() or (shift and shift[0].any()):
            result.append(adapters.LayerAdapter(name, a, b, *shift))
    return result


def adapter_bits(model: nn.Module) -> torch.Tensor:
    """The adapter's code length as pillow_unz.adapter.encode codes it, differentiable."""
    bits = torch.zeros(())
    for layer in lora_layers(model).values():
        for factor in layer.factors():
            steps = adapters.quantize_factor(factor) * 2**WEIGHT_BITS
            index = adapters.best_scale_index(steps.detach().round().int().cpu().numpy())
            scale = torch.tensor([index], device=steps.device)
            bits = bits + pixelmodel.latent_bits(steps.view(1, 1, 1, -1), scale, adapters.FACTOR_LIMIT).sum().cpu()
    return bits


def tune(
    model: UnzNet,
    model_scale_table: np.ndarray,
    planes: np.ndarray,
    settings: LoraSettings,
    progress: Callable[[int, float], None] | None = None,
    context_network: ContextNetwork | None = None,
) -> tuple[adapters.Adapter, int]:
    """Train an adapter of the network `model` on planes (C, H, W) uint8, coded with the scale
    table `model_scale_table` and the context network (None: the classical pixel model); returns
    it and the steps taken. progress(step, bits per subpixel) is called after every step."""
    device = torch.device(settings.device)
    tuned = wrap(model, settings.rank, settings.targets).to(device)
    c, h, w = planes.shape
    ordered = np.ascontiguousarray(planes[codec.coding_order(c)])
    x = torch.from_numpy(ordered).long().to(device)[None]
    mean8, spread, feedback = pixelmodel.classical_prediction(x)
    scale_offset = torch.zeros_like(x)
    if context_network is not None:  # its outputs depend on the pixels alone: computed once
        correction, scale_offset = torch.from_numpy(
            _coder.context_outputs(ordered, context_network.coder_layers(), torch.get_num_threads())).long().to(device)[:, None]
        mean8 = mean8 + correction
    classical = (mean8, spread, feedback)
    z = torch.zeros((1, *tuned.latent_shape(h, w)), device=device)
    scale_table = torch.from_numpy(model_scale_table).to(device)
    rows = min(h, max(1, STEP_PIXELS // w))
    rng = random.Random(0)
    params = [p for layer in lora_layers(tuned).values() for p in layer.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=LEARNING_RATE)
    start, step = time.monotonic(), 0
    while (settings.steps is None or step < settings.steps) and (
        settings.seconds is None or time.monotonic() - start < settings.seconds
    ):
        top = rng.randrange(h - rows + 1)
        band = slice(top, top + rows)
        param_planes = tuned.decode(z, h, w, range(top, top + rows))
        param_planes = param_planes + F.pad(scale_offset[..., band, :], (0, 0, 0, 0, 0, c)).to(param_planes.dtype)
        pixel_bits = pixelmodel.pixel_bits(x[..., band, :], param_planes, scale_table, tuple(t[..., band, :].contiguous() for t in classical)).sum()
        # Per subpixel: the band's pixels stand for the image's, the adapter is the whole's.
        loss = pixel_bits / (c * rows * w) + adapter_bits(tuned).to(device) / planes.size
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if progress:
            progress(step, loss.item())
    return extract(tuned), step


def compress(
    pixels: np.ndarray,
    mode: str,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    xmp: bytes | None = None,
    models: ModelSet | None = None,
    settings: LoraSettings | None = None,
    progress: Callable[[int, float], None] | None = None,
    effort: int = DEFAULT_EFFORT,
) -> LoraResult:
    """api.compress at `effort` with a per-image adapter for every plane group where one pays
    for itself."""
    settings = settings or LoraSettings()
    tools.effort_of(effort)
    models = models or load_models()
    header, groups = api.prepare(pixels, mode, models, effort)
    frame = api.encode_frame(header, groups, models, effort)  # without adapters: what each group must beat
    coded_planes = groups if frame.repeats is None else [frame.repeats.forward(g) for g in groups]
    tuned, adapted, reports = [], [], []
    for planes, plain in zip(coded_planes, frame.groups):
        photo, network = models.for_channels(len(planes)), models.network(len(planes))
        start = time.monotonic()
        # the effort's first pixel model, where these planes can have it
        context_network = photo.context_network(photo.usable_network(tools.effort_of(effort).network, planes.dtype != np.uint8))
        adapter, steps = tune(network, photo.scale_table, planes, settings, progress, context_network)
        adapted_photo = replace(photo, network=adapters.apply(network, adapter))
        adapted.append(codec.encode_planes(adapted_photo, planes, effort) if adapter else plain)
        cost = len(adapters.encode([adapter]))
        reports.append(GroupReport(len(planes), plain.size, adapted[-1].size, cost, steps, time.monotonic() - start))
        worth = adapted[-1].size + reports[-1].adapter_bytes < plain.size
        tuned.append(adapter if worth else [])
    metadata = api.metadata_of(icc_profile, exif, xmp)
    without = fmt.to_bytes(fmt.UnzFile(header, metadata, None, frame.groups, repeats=frame.repeats))
    if any(tuned):  # the last word is the whole file's size, chunk framing included
        coded = [a if t else p for a, p, t in zip(adapted, frame.groups, tuned)]
        data = fmt.to_bytes(fmt.UnzFile(header, metadata, adapters.encode(tuned), coded, repeats=frame.repeats))
        if len(data) < len(without):
            for report, t in zip(reports, tuned):
                report.kept = bool(t)
            return LoraResult(data, reports)
    return LoraResult(without, reports)
