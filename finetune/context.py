"""Train the learned photo tool's context network (csrc/context_network.h): per channel, an MLP
that reads each sample's classical context and corrects its mean and scale, on top of the
classical pixel model (whose online scale adaptation and bias cancellation stay on).

    python -m pillow_unz.finetune.context --channels 3 --hidden 32 --layers 2 --out runs/net-rgb-0
    python -m pillow_unz.finetune.context install runs/net-rgb-0 runs/net-rgb-1 runs/net-gray-0 runs/net-gray-1 \\
        --weights weights/unz-default.safetensors

Training is teacher-forced: the classical contexts come from the coder's own code, for every crop,
and the loss is the code length the coder achieves with the network's outputs (pixelmodel.py).
Every step draws new crops from the training photographs at full size and reduced 2x to 4x
(graphics left out: --skip), flipped at random; with --workers, worker processes cut them (the
coder's contexts are most of a step's cost once the network trains on a GPU: --device cuda).
--init starts from another run's network with a fresh schedule (a warm restart), --init-network
from one the weights file holds, --widen and --inputs grow either's hidden layers and the
context it reads (same outputs at first); --minutes runs the schedule on the clock instead of a
step count (a machine's speed is not known beforehand);
--partner K trains against the weights file's network K, frozen: a crop costs what the better
of the two codes it in, as the encoder keeps the better network of each band. --readout trains
for the coder's online readout of the hidden layers (readout_correction; docs/DESIGN.md).
The run checkpoints to OUT/ckpt.pt and resumes from it; at the end the network is quantized to
the coder's integers (activation scales calibrated on training crops) and written to
OUT/network.safetensors, with the real codec's bits on --eval in its metadata (a network wider
than the coder takes stays a float one in OUT/ckpt.pt; `score` measures runs' float networks
teacher-forced). `pack` writes the training photos as .unz tiles, a copy small enough to send
to a GPU machine.
`install` puts finished runs into a weights file as the model's networks 0, 1, ... (in the order
given, per channel count): effort levels pick among them (pillow_unz.tools); with --keep, the
file it replaces stays beside it under its model id, for the files it coded.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import load, save
from torch import nn

from pillow_unz import _coder, codec, pixelmodel
from pillow_unz.context_network import ContextNetwork
from pillow_unz.finetune.train import data_hash, image_files, planes_of, to_mode
from pillow_unz.weights import (CONTEXT_NETWORK, MODEL_KEYS, earlier_weights_name, file_metadata, kept_difference, load_models,
                                parse_models, read_networks, serialize_models)

REDUCTIONS = (1, 2, 3, 4)
INPUT_LIMIT = _coder.NET_INPUT_LIMIT


class Sample:
    """Planes in coding order with their classical prediction and context, computed once."""

    def __init__(self, planes: np.ndarray) -> None:
        planes = np.ascontiguousarray(planes[codec.coding_order(len(planes))])
        self.x = torch.from_numpy(planes).long()[None]
        self.classical = pixelmodel.classical_prediction(self.x)
        self.context = torch.from_numpy(_coder.classical_contexts(planes, torch.get_num_threads()))[None]

    def to(self, device: torch.device) -> Sample:
        moved = Sample.__new__(Sample)
        moved.x, moved.context = self.x.to(device), self.context.to(device)
        moved.classical = tuple(t.to(device) for t in self.classical)
        return moved


def batch_of(samples: list[Sample]) -> Sample:
    batch = Sample.__new__(Sample)
    batch.x = torch.cat([s.x for s in samples])
    batch.classical = tuple(torch.cat([s.classical[i] for s in samples]) for i in range(3))
    batch.context = torch.cat([s.context for s in samples])
    return batch


class ContextMLP(nn.Module):
    """The float network that training tunes: per channel, `layers` linear layers with ReLUs,
    over the context's first `inputs` values (NARROW_CONTEXT_SIZE or CONTEXT_SIZE) divided by
    `norm` (their mean magnitude on training crops)."""

    def __init__(self, channels: int, hidden: int, layers: int, norm: torch.Tensor, inputs: int = _coder.CONTEXT_SIZE) -> None:
        super().__init__()
        if len(norm) < inputs:
            raise ValueError(f"a scale for each of the {inputs} inputs, not {len(norm)}")
        self.register_buffer("norm", norm[:inputs].clone())
        self.mlps = nn.ModuleList()
        for _ in range(channels):
            stack, width = [], inputs
            for _ in range(layers - 1):
                stack += [nn.Linear(width, hidden), nn.ReLU()]
                width = hidden
            last = nn.Linear(width, 2)  # mean correction (samples), scale offset (doublings)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.mlps.append(nn.Sequential(*stack, last))

    def linears(self, c: int) -> list[nn.Linear]:
        return [m for m in self.mlps[c] if isinstance(m, nn.Linear)]

    def forward(self, context: torch.Tensor, hidden: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """context (B, K, C, H, W) -> (B, C, 2, H, W): in eighths of a sample and of a doubling;
        with `hidden`, also every hidden layer's activations (B, C, H, W, F), what the coder's
        online readout reads."""
        out, features = [], []
        for c, mlp in enumerate(self.mlps):
            v = context[:, : len(self.norm), c].float().clamp(-INPUT_LIMIT, INPUT_LIMIT) / self.norm.view(1, -1, 1, 1)
            v, layers = v.permute(0, 2, 3, 1), []
            for module in mlp:
                v = module(v)
                if isinstance(module, nn.ReLU):
                    layers.append(v)
            out.append(8 * v.permute(0, 3, 1, 2))
            if hidden:
                features.append(torch.cat(layers, -1))
        outputs = torch.stack(out, 1)
        return (outputs, torch.stack(features, 1)) if hidden else outputs


def code_length(outputs: torch.Tensor | None, s: Sample, table: torch.Tensor, constants: torch.Tensor) -> torch.Tensor:
    """Teacher-forced bits per subpixel of s under the pixel model with the network's outputs
    (B, C, 2, H, W) (None: the classical model alone), floored as the coder takes them."""
    return crop_bits(outputs, s, table, constants).sum() / s.x.numel()


def readout_correction(features: torch.Tensor, residual: torch.Tensor, ridge: float = 1e-2) -> torch.Tensor:
    """What the coder's online readout adds to the mean, as training sees it: per crop and
    channel, the ridge regression of the residuals (B, C, H, W; eighths, clipped as the readout
    clips its errors, more loosely) on the hidden features (B, C, H, W, F) of the crop's upper
    half, applied to its lower half (zero above): learnt from the samples before, as the
    decoder learns it, and differentiable, so that the network learns features a per-image
    linear readout can use."""
    half = features.shape[2] // 2
    f, t = features[:, :, :half].flatten(2, 3), residual[:, :, :half].flatten(2).clamp(-16, 16)
    gram = f.transpose(-1, -2) @ f
    eye = torch.eye(gram.shape[-1], device=gram.device)
    regular = ridge * gram.diagonal(dim1=-2, dim2=-1).mean(-1, keepdim=True).unsqueeze(-1).clamp(min=1e-6) * eye
    w = torch.linalg.solve(gram + regular, (f.transpose(-1, -2) @ t.unsqueeze(-1)))
    lower = (features[:, :, half:] @ w.unsqueeze(2)).squeeze(-1)
    return torch.cat([torch.zeros_like(residual[:, :, :half]), lower], 2)


def crop_bits(outputs: torch.Tensor | None, s: Sample, table: torch.Tensor, constants: torch.Tensor,
              hidden: torch.Tensor | None = None) -> torch.Tensor:
    """code_length's bits, per crop of s: (B,); with the network's hidden features, after the
    online readout (readout_correction)."""
    mean8, spread, feedback = s.classical
    b, c = s.x.shape[:2]
    params = constants.view(1, -1, 1, 1).expand(b, -1, *s.x.shape[2:]).float()
    if hidden is not None:
        residual = 8 * s.x.float() - mean8.float() - outputs[:, :, 0]
        outputs = torch.cat([(outputs[:, :, 0] + readout_correction(hidden, residual)).unsqueeze(2), outputs[:, :, 1:]], 2)
    if outputs is not None:
        outputs = pixelmodel._floor(outputs)
        limits = torch.tensor([_coder.NET_MAX_CORRECTION, _coder.NET_MAX_SCALE_OFFSET], device=outputs.device).view(1, 1, 2, 1, 1)
        outputs = torch.maximum(torch.minimum(outputs, limits), -limits)
        mean8 = mean8 + outputs[:, :, 0]
        params = params + torch.cat([outputs[:, :, 1], torch.zeros_like(outputs[:, :, 1])], 1)
    return pixelmodel.pixel_bits(s.x, params, table, (mean8, spread, feedback)).flatten(1).sum(1)


def training_files(data: str, skip: str) -> list[Path]:
    """The images of folder `data` but those whose names start with `skip` (when not empty)."""
    return [f for f in image_files(data) if not (skip and f.name.startswith(skip))]


def training_images(files: list[Path], channels: int, reductions: tuple[int, ...] = REDUCTIONS) -> list[np.ndarray]:
    """The planes of every file at every reduction (1: full size)."""
    images = []
    for f in files:
        full = to_mode(Image.open(f), channels)
        images += [planes_of(full.reduce(r) if r > 1 else full) for r in reductions]
    return images


def random_crop(images: list[np.ndarray], crop: int, rng: random.Random) -> Sample:
    """A crop of a random image (of those at least crop x crop), mirrored half of the time,
    with its classical contexts: drawn afresh at every step, so the network never sees the
    same crop twice (a fixed set of a few hundred crops was learnt by heart)."""
    planes = rng.choice([p for p in images if min(p.shape[1:]) >= crop])
    _, h, w = planes.shape
    y, x = rng.randrange(h - crop + 1), rng.randrange(w - crop + 1)
    c = planes[:, y : y + crop, x : x + crop]
    return Sample(np.ascontiguousarray(c[:, :, ::-1] if rng.random() < 0.5 else c))


class RandomCrops(torch.utils.data.IterableDataset):
    """An endless stream of random_crop, each worker process drawing from a seed of its own."""

    def __init__(self, images: list[np.ndarray], crop: int, seed: tuple[int, ...]) -> None:
        self.images, self.crop, self.seed = images, crop, seed

    def __iter__(self) -> Iterator[Sample]:
        worker = torch.utils.data.get_worker_info()
        rng = random.Random(repr((*self.seed, worker.id if worker else 0)))
        while True:
            yield random_crop(self.images, self.crop, rng)


def quantize(model: ContextMLP, calibration: list[Sample]) -> ContextNetwork:
    """The coder's integers for a trained network: each layer's weights on the finest power-of-two
    grid that keeps them within NET_WEIGHT_LIMIT (the first layer's with the input scaling folded
    in), each hidden layer's activations on the finest grid that keeps the calibration crops'
    largest (bar one in 10^5) within NET_ACTIVATION_LIMIT, the outputs in eighths."""
    model = model.double()
    count = len(model.linears(0))
    peaks = [0.0] * (count - 1)
    with torch.no_grad():
        for c in range(len(model.mlps)):
            v = torch.cat([s.context[:, : len(model.norm), c].flatten(2) for s in calibration], 2).double()
            v = (v.clamp(-INPUT_LIMIT, INPUT_LIMIT) / model.norm.view(1, -1, 1)).permute(0, 2, 1).reshape(-1, v.shape[1])
            for k, linear in enumerate(model.linears(c)[:-1]):
                v = linear(v).relu()
                peaks[k] = max(peaks[k], torch.quantile(v.flatten()[:2**24].float(), 0.99999).item())
    activation_bits = [int(math.floor(math.log2(_coder.NET_ACTIVATION_LIMIT / max(p, 1e-6)))) for p in peaks] + [0]
    layers, input_bits = [], 0
    for k in range(count):
        w = torch.stack([model.linears(c)[k].weight for c in range(len(model.mlps))]).detach()
        b = torch.stack([model.linears(c)[k].bias for c in range(len(model.mlps))]).detach()
        if k == 0:
            w = w / model.norm.view(1, 1, -1)
        if k == count - 1:
            w, b = 8 * w, 8 * b  # outputs in eighths
        weight_bits = int(math.floor(math.log2(_coder.NET_WEIGHT_LIMIT / max(w.abs().max().item(), 1e-9))))
        shift = weight_bits + input_bits - activation_bits[k]
        if shift < 0:  # weights too small for their grid's shift: a coarser grid loses nothing worth keeping
            weight_bits, shift = weight_bits - shift, 0
        wq = torch.round(w * 2.0**weight_bits).clamp(-_coder.NET_WEIGHT_LIMIT, _coder.NET_WEIGHT_LIMIT)
        bq = torch.round(b * 2.0 ** (weight_bits + input_bits)).clamp(-_coder.NET_BIAS_LIMIT, _coder.NET_BIAS_LIMIT)
        layers.append((wq.numpy().astype(np.int16), bq.numpy().astype(np.int32), shift))
        input_bits = activation_bits[k]
    model.float()
    return ContextNetwork(tuple(layers))


def dequantize(network: ContextNetwork, norm: torch.Tensor) -> ContextMLP:
    """A float network that computes what `network`'s integers do, but for the floors and clips:
    training can go on from a shipped network whose run is gone (`--init-network`). Each layer's
    weights are scaled to a largest magnitude in (0.5, 1], as training keeps them, the activations
    scaled along (a ReLU passes a positive factor through)."""
    weights = [torch.from_numpy(w.astype(np.float64)) for w, _, _ in network.layers]
    biases = [torch.from_numpy(b.astype(np.float64)) for _, b, _ in network.layers]
    hidden, count = network.layers[0][0].shape[1], len(network.layers)
    model = ContextMLP(network.channels, hidden, count, norm, network.inputs).double()
    for c in range(network.channels):
        scale = model.norm  # float inputs times this are the integer inputs
        for k, (linear, (_, _, shift)) in enumerate(zip(model.linears(c), network.layers)):
            w = weights[k][c] * scale / 2.0**shift  # integer activations of layer k from float inputs
            b = biases[k][c] / 2.0**shift
            if k + 1 < count:
                unit = 2.0 ** math.ceil(math.log2(max(w.abs().max().item(), 1e-30)))  # one float activation, in integers
                w, b, scale = w / unit, b / unit, torch.full((w.shape[0],), unit, dtype=torch.float64)
            else:
                w, b = w / 8, b / 8  # the forward pass gives eighths
            linear.weight.data.copy_(w)
            linear.bias.data.copy_(b)
    return model.float()


def grown(model: ContextMLP, hidden: int, inputs: int, norm: torch.Tensor) -> ContextMLP:
    """`model` with its hidden layers grown to `hidden` units and its first layer to the context's
    first `inputs` values (scaled by `norm`, training's), computing the same outputs: no old unit
    reads a new input or unit, and the new units' outgoing weights are zero. Training starts from
    what the model knew and learns what the new inputs and units add (the new units from their
    own random weights)."""
    count = len(model.linears(0))
    big = ContextMLP(len(model.mlps), hidden, count, torch.cat([model.norm, norm[len(model.norm) : inputs]]), inputs)
    with torch.no_grad():
        for c in range(len(model.mlps)):
            for k, (old, new) in enumerate(zip(model.linears(c), big.linears(c))):
                rows, cols = old.weight.shape
                new.weight[:rows, cols:] = 0  # old units: the same sums
                if k == count - 1:
                    new.weight[:] = 0  # outputs: no weight from the new units
                new.weight[:rows, :cols] = old.weight
                new.bias[:rows] = old.bias
    return big


def codec_bits(photo: codec.PhotoModel, network: ContextNetwork | None, files: list[Path]) -> tuple[int, int]:
    """Bytes of the photo tool's streams of `files` (with the network, or without), and samples."""
    size = samples = 0
    for f in files:
        planes = planes_of(Image.open(f))
        ordered = np.ascontiguousarray(planes[codec.coding_order(len(planes))])
        size += len(codec.encode_samples(photo, ordered, network))
        samples += planes.size
    return size, samples


def train(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    photo = load_models().for_channels(args.channels)
    for option, index in (("--partner", args.partner), ("--init-network", args.init_network)):
        if index is not None and not 0 <= index < len(photo.context_networks):
            raise SystemExit(f"{option} {index}: the {MODEL_KEYS[args.channels]} model has networks 0 to "
                             f"{len(photo.context_networks) - 1}")
    if args.readout and args.partner is not None:
        raise SystemExit("--readout and --partner: the partner's bits would be without a readout")
    files = training_files(args.data, args.skip)
    started = time.time()
    reductions = tuple(int(r) for r in args.reductions.split(","))
    images = training_images(files, args.channels, reductions)
    first = [random_crop(images, args.crop, rng) for _ in range(64)]  # for the input scaling and calibration
    print(json.dumps({"images": len(images), "minutes": round((time.time() - started) / 60, 1)}), flush=True)
    partner = photo.context_network(args.partner)
    table = torch.from_numpy(photo.scale_table).float().to(device)
    constants = torch.from_numpy(photo.constants).float().to(device)
    contexts = torch.cat([c.context.transpose(0, 1).flatten(1) for c in first], 1).float()
    norm = contexts.clamp(-INPUT_LIMIT, INPUT_LIMIT).abs().mean(1).clamp(min=1)
    if args.init_network is not None:
        model = dequantize(photo.context_networks[args.init_network], norm)
    elif args.init:
        init = json.loads(file_metadata((Path(args.init) / "network.safetensors").read_bytes())["training"])
        if init["channels"] != args.channels:
            raise SystemExit(f"--init {args.init}: a {init['channels']}-channel network, not {args.channels}")
        model = ContextMLP(args.channels, init["hidden"], init["layers"], norm, init.get("inputs", _coder.NARROW_CONTEXT_SIZE))
        model.load_state_dict(torch.load(Path(args.init) / "ckpt.pt", map_location="cpu")["model"])  # the run's shape
    else:
        model = ContextMLP(args.channels, args.hidden, args.layers, norm, args.inputs or _coder.CONTEXT_SIZE)
    own = (model.linears(0)[0].out_features, len(model.norm))
    size = (args.widen or own[0], args.inputs or own[1])
    if size != own:
        if not (args.init or args.init_network is not None) or min(size[0] - own[0], size[1] - own[1]) < 0:
            raise SystemExit("--widen, --inputs: more units or inputs than the network of --init or --init-network has")
        model = grown(model, *size, norm)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    step, trained, ckpt = 0, 0.0, out / "ckpt.pt"  # trained: seconds of training before this process
    if ckpt.exists():
        state = torch.load(ckpt, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, trained = state["step"], state.get("seconds", 0.0)
        print(f"resumed at step {step}", flush=True)
    crops = torch.utils.data.DataLoader(RandomCrops(images, args.crop, (args.seed, step)), batch_size=args.batch,
                                        collate_fn=batch_of, num_workers=args.workers)
    clock = time.time() - trained

    def progress() -> float:
        return (time.time() - clock) / (60 * args.minutes) if args.minutes else step / args.steps

    for batch in crops:
        if progress() >= 1:
            break
        step += 1
        for g in optimizer.param_groups:
            g["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * min(progress(), 1)))
        batch = batch.to(device)
        if args.readout:  # the code length after the online readout
            outputs, hidden = model(batch.context, hidden=True)
            loss = crop_bits(outputs, batch, table, constants, hidden).sum() / batch.x.numel()
        elif partner is None:
            loss = code_length(model(batch.context), batch, table, constants)
        else:  # each crop costs what the better of the two codes it in (the encoder picks per band)
            theirs = torch.from_numpy(np.stack([partner.outputs(c.numpy()) for c in batch.context.cpu()])).to(device)
            with torch.no_grad():
                their_bits = crop_bits(theirs.float(), batch, table, constants)
            loss = torch.minimum(crop_bits(model(batch.context), batch, table, constants), their_bits).sum() / batch.x.numel()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.log_every == 0 or progress() >= 1:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                        "seconds": time.time() - clock}, ckpt)
            print(json.dumps({"step": step, "loss": round(loss.item(), 4),
                              "minutes": round((time.time() - started) / 60, 1)}), flush=True)
    linears = model.linears(0)
    if linears[0].out_features > _coder.NET_MAX_WIDTH:
        print(f"{linears[0].out_features} units: wider than the coder takes ({_coder.NET_MAX_WIDTH}); "
              f"the float network is in {ckpt} (`score` measures it)", flush=True)
        return
    network = quantize(model.cpu(), first)
    meta = {"channels": args.channels, "hidden": linears[0].out_features, "layers": len(linears), "inputs": len(model.norm),
            "steps": step, "batch": args.batch, "crop": args.crop, "lr": args.lr, "seed": args.seed, "reductions": list(reductions),
            "files": len(files), "data_hash": data_hash(files), "minutes": round((time.time() - started) / 60, 1),
            "device": args.device, "partner": args.partner, "readout": args.readout}
    if args.init:
        meta["init"] = init
    elif args.init_network is not None:
        meta["init"] = {"network": args.init_network, "model_id": load_models().model_id.hex()}
    if args.eval:
        evals = [f for f in image_files(args.eval) if len(Image.open(f).getbands()) == args.channels]
        with_net, samples = codec_bits(photo, network, evals)
        without, _ = codec_bits(photo, None, evals)
        meta["eval"] = {"bpsp": round(8 * with_net / samples, 4), "bpsp_without": round(8 * without / samples, 4),
                        "saving": round(1 - with_net / without, 4)}
        print(json.dumps(meta["eval"]), flush=True)
    (out / "network.safetensors").write_bytes(save(network.to_tensors(""), metadata={"training": json.dumps(meta)}))
    print(f"wrote {out / 'network.safetensors'}", flush=True)


def run_model(run: Path) -> ContextMLP:
    """The float network of a run's checkpoint, its shape read off its tensors."""
    state = torch.load(run / "ckpt.pt", map_location="cpu")["model"]
    channels = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("mlps."))
    layers = sum(1 for k in state if k.startswith("mlps.0.") and k.endswith(".weight"))
    model = ContextMLP(channels, state["mlps.0.0.weight"].shape[0], layers, state["norm"], len(state["norm"]))
    model.load_state_dict(state)
    return model


def score(args: argparse.Namespace) -> None:
    """Teacher-forced bits (code_length, no readout) of each photo of --eval, whole (colour ones in
    gray for --channels 1, gray ones left out for 3), under the classical model, the weights
    file's networks (netK, as floats) and runs' float networks (ckpt.pt, any width): for
    comparing runs before the coder can take them."""
    torch.set_num_threads(args.threads)
    photo = load_models().for_channels(args.channels)
    table, constants = torch.from_numpy(photo.scale_table).float(), torch.from_numpy(photo.constants).float()
    files = [f for f in image_files(args.eval) if args.channels == 1 or len(Image.open(f).getbands()) == 3]
    if not files:
        raise SystemExit(f"--eval {args.eval}: no photos to score")
    samples = [Sample(planes_of(to_mode(Image.open(f), args.channels))) for f in files]
    norm = torch.ones(_coder.CONTEXT_SIZE)  # the shipped networks' input scaling: any, dequantize folds it in
    rows = {"classical": None}
    for spec in args.networks:
        rows[spec] = dequantize(photo.context_networks[int(spec[3:])], norm) if spec.startswith("net") else run_model(Path(spec))
    bits = {}
    with torch.no_grad():
        for name, model in rows.items():
            bits[name] = [crop_bits(None if model is None else model(s.context), s, table, constants).item() for s in samples]
    print("bytes, then each photo against the classical model: " + " ".join(f.stem for f in files))
    for name, b in bits.items():
        print(f"{name:32s} {sum(b) / 8:12,.0f}  {100 * (sum(b) / sum(bits['classical']) - 1):+.3f}%  " +
              " ".join(f"{100 * (x / y - 1):+.2f}" for x, y in zip(b, bits["classical"])))


def pack(args: argparse.Namespace) -> None:
    """Cut every training photo, at every reduction, into at most --pixels pixels of random tiles
    (whole when small enough), coded as .unz: a training set small enough to send to a GPU
    machine (train there with --reductions 1 --skip '')."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    files = training_files(args.data, args.skip)
    for f in files:
        full = Image.open(f).convert("RGB")
        for r in REDUCTIONS:
            img = full.reduce(r) if r > 1 else full
            w, h = img.size
            if w * h <= args.pixels:
                tiles = [img]
            else:
                tiles = []
                for _ in range(max(1, args.pixels // args.tile**2)):
                    x, y = rng.randrange(w - args.tile + 1), rng.randrange(h - args.tile + 1)
                    tiles.append(img.crop((x, y, x + args.tile, y + args.tile)))
            for k, tile in enumerate(tiles):
                tile.save(out / f"{f.stem}-r{r}-{k}.unz", effort=3)
    print(f"wrote {len(list(out.glob('*.unz')))} files to {out}")


def install(args: argparse.Namespace) -> None:
    """Put finished runs into a weights file as its models' context networks: in the order given,
    or (--at K) each as its model's network K, the model's other networks kept. A model that no
    run names keeps its networks."""
    data = Path(args.weights).read_bytes()
    models = parse_models(data)
    networks, metadata = read_networks(data)
    by_channels: dict[int, list[ContextNetwork]] = {}
    for run in map(Path, args.runs):
        blob = (run / "network.safetensors").read_bytes()
        network = ContextNetwork.from_tensors(load(blob), "")
        shipped = list(models.photo[network.channels].context_networks)
        nets = by_channels.setdefault(network.channels, [] if args.at is None else shipped)
        index = len(nets) if args.at is None else args.at
        if index > len(nets):
            raise SystemExit(f"--at {index}: the {MODEL_KEYS[network.channels]} model has {len(nets)} networks")
        nets[index : index + 1] = [network]
        metadata[f"{MODEL_KEYS[network.channels]}.{CONTEXT_NETWORK}{index}.training"] = file_metadata(blob)["training"]
    photo = {c: dataclasses.replace(models.photo[c], context_networks=tuple(by_channels[c])) if c in by_channels else models.photo[c]
             for c in models.photo}
    new = serialize_models(networks, photo, metadata)
    if args.keep:  # the files the replaced weights wrote go on decoding (weights.models_for)
        kept = Path(args.weights).with_name(earlier_weights_name(models.model_id))
        kept.write_bytes(kept_difference(data, new))
        print(f"kept the replaced weights as {kept}, as their difference to the new ones")
    Path(args.weights).write_bytes(new)
    print(f"wrote {args.weights}: " + ", ".join(f"{MODEL_KEYS[c]} {len(n)} networks" for c, n in by_channels.items()))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["install"]:
        p = argparse.ArgumentParser(prog="context install")
        p.add_argument("runs", nargs="+")
        p.add_argument("--weights", required=True)
        p.add_argument("--at", type=int, default=None, help="put each run in as its model's network of this index")
        p.add_argument("--keep", action="store_true",
                       help="keep the replaced weights beside it, named by model id, so that its files still decode")
        return install(p.parse_args(argv[1:]))
    if argv[:1] == ["score"]:
        p = argparse.ArgumentParser(prog="context score", description=score.__doc__)
        p.add_argument("networks", nargs="*", help="netK (the weights file's network K) or a run's folder")
        p.add_argument("--channels", type=int, choices=(1, 3), default=3)
        p.add_argument("--eval", required=True, help="folder of photos")
        p.add_argument("--threads", type=int, default=2)
        return score(p.parse_args(argv[1:]))
    if argv[:1] == ["pack"]:
        p = argparse.ArgumentParser(prog="context pack", description=pack.__doc__)
        p.add_argument("--data", default="data/train")
        p.add_argument("--skip", default="ukui-")
        p.add_argument("--out", required=True)
        p.add_argument("--pixels", type=int, default=750_000, help="per photo and reduction")
        p.add_argument("--tile", type=int, default=384)
        p.add_argument("--seed", type=int, default=0)
        return pack(p.parse_args(argv[1:]))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, choices=(1, 3), default=3)
    p.add_argument("--data", default="data/train")
    p.add_argument("--eval", default="", help="folder of evaluation photos (never trained on)")
    p.add_argument("--skip", default="ukui-", help="leave out training files whose names start so (graphics)")
    p.add_argument("--out", required=True)
    p.add_argument("--hidden", type=int, default=32, help="(--init and --init-network: the network's own)")
    p.add_argument("--layers", type=int, default=2, help="linear layers per channel (as --hidden)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--minutes", type=float, default=0, help="train for this long instead of --steps")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--init", default="", help="a finished run to start from (fresh optimizer and schedule)")
    start.add_argument("--init-network", type=int, default=None,
                   help="start from the weights file's network of this index instead (its integers as floats)")
    p.add_argument("--widen", type=int, default=0,
                   help="with --init or --init-network: grow its hidden layers to this many units, same outputs at first")
    p.add_argument("--inputs", type=int, default=0, choices=(_coder.NARROW_CONTEXT_SIZE, _coder.CONTEXT_SIZE),
                   help="how much of the context the network reads (default: all; --init and --init-network: its own, "
                        "or more, same outputs at first)")
    p.add_argument("--partner", type=int, default=None,
                   help="the weights file's network of this index, frozen: each crop's loss is the smaller of "
                        "the two networks' code lengths, so that this one learns what the other codes worse")
    p.add_argument("--readout", action="store_true",
                   help="train for the coder's online readout: the loss after a linear readout of the hidden layers "
                        "fitted on each crop's upper half (readout_correction); not with --partner")
    p.add_argument("--device", default="cpu", help="where the network trains: cpu, cuda, ...")
    p.add_argument("--workers", type=int, default=0, help="processes cutting crops (0: this one)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--reductions", default=",".join(map(str, REDUCTIONS)), help="of the training images (1: full size)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log-every", type=int, default=250)
    train(p.parse_args(argv))


if __name__ == "__main__":
    main()
