"""Train pillow-unz's default models: a plain, linear loop (nanoGPT style).

    python -m pillow_unz.finetune.train --channels 3 --data data/train --out runs/rgb
    python -m pillow_unz.finetune.train --channels 1 --data data/train --out runs/gray
    python -m pillow_unz.finetune.train export runs/rgb runs/gray --data data/train -o weights/unz-default.safetensors

Under torchrun the same command trains with DistributedDataParallel (gloo on CPUs, NCCL on
GPUs), each process drawing its own crops:

    torchrun --nproc_per_node 2 -m pillow_unz.finetune.train --channels 3 --out runs/rgb

Photographs are reduced 2x, 3x and 4x (which washes out their JPEG history), cropped at random
and flipped. The loss is the code length in bits per subpixel of the pixel model plus z. Every
`--eval-every` steps the real codec measures bits per subpixel on --eval (evaluation only), with
the network's parameter planes. The run checkpoints to OUT/ckpt.pt and resumes from it;
OUT/model.safetensors holds the latest network with its config, the data's hash and the seed in
its metadata.

Export turns each run into a shipped model: the network, its scale table, and the constant
parameters that code the training photographs (reduced FIT_REDUCTION times) in the fewest bytes,
from the mean of the network's planes (pillow_unz.bench.fit_constants). Files use the constants;
the network serves per-image adapters.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from pillow_unz import _coder, codec, pixelmodel
from pillow_unz.bench import fit_constants
from pillow_unz.model import Z_MAX, ModelConfig, UnzNet
from pillow_unz.weights import CONTEXT_NETWORK, MODEL_KEYS, parse_models, read_networks, serialize_models

REDUCTIONS = (2, 3, 4)
FIT_REDUCTION = 4


def image_files(folder: str | Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".ppm", ".unz"})


def data_hash(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    return img.convert("RGB" if channels == 3 else "L")


def planes_of(img: Image.Image) -> np.ndarray:
    a = np.asarray(img)
    return np.ascontiguousarray(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))


class TrainingImage:
    """A training image with its (flipped) copies' classical predictions, computed once: they
    depend on the pixels alone, and are most of the pixel model's cost."""

    def __init__(self, planes: np.ndarray) -> None:
        planes = planes[codec.coding_order(len(planes))]
        self.versions = []
        for version in (planes, np.ascontiguousarray(planes[:, :, ::-1])):
            x = torch.from_numpy(version).long()[None]
            classical = pixelmodel.classical_prediction(x)
            self.versions.append((x[0].to(torch.uint8), *(t[0].to(torch.int16) for t in classical)))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.versions[0][0].shape)


def load_training_set(files: list[Path], channels: int, progress: bool = True) -> list[TrainingImage]:
    images = []
    for f in tqdm(files, desc="loading", mininterval=5, disable=not progress):
        full = to_mode(Image.open(f), channels)
        images += [TrainingImage(planes_of(full.reduce(r))) for r in REDUCTIONS]
    return images


Batch = tuple[torch.Tensor, pixelmodel.Classical]


def sample_batch(images: list[TrainingImage], batch: int, crop: int, rng: random.Random) -> Batch:
    """Random crops, half of them mirrored: (samples, their classical_prediction) as int64."""
    parts: list[list[torch.Tensor]] = [[], [], [], []]
    fitting = [img for img in images if min(img.shape[1:]) >= crop]
    if not fitting:
        raise ValueError(f"no training image is at least {crop}x{crop}: use a smaller --crop")
    for _ in range(batch):
        img = rng.choice(fitting)
        _, h, w = img.shape
        y, x = rng.randrange(h - crop + 1), rng.randrange(w - crop + 1)
        for part, t in zip(parts, img.versions[rng.random() < 0.5]):
            part.append(t[:, y : y + crop, x : x + crop])
    x, *classical = (torch.stack(p).long() for p in parts)
    return x, tuple(classical)


def bits_per_subpixel(model: UnzNet, x: torch.Tensor, classical: pixelmodel.Classical | None = None) -> torch.Tensor:
    """The training loss: pixel-model plus z code length, per subpixel."""
    z, params = model(x.float())
    bits = pixelmodel.pixel_bits(x, params, model.scale_table_index(), classical).sum()
    bits = bits + pixelmodel.latent_bits(z, model.z_scale_index(), Z_MAX).sum()
    return bits / x.numel()


@torch.no_grad()
def init_scale_table(model: UnzNet, batch: Batch) -> None:
    """Start each context cell at the logistic scale that fits its residuals in `batch`: cells
    with few samples borrow from their activity bucket, so training starts from sensible scales."""
    x, classical = batch
    _, params = model(x.float())
    mean8, cells, _ = pixelmodel.pixel_contexts(x, params, classical)
    mad = (8 * x - mean8).abs() / 8  # mean absolute deviation of a logistic is 2 ln 2 * scale
    table = model.log_scale_table.view(x.shape[1], -1)
    per_activity = table.shape[1] // pixelmodel.TABLE_SHAPE[0]
    for c in range(x.shape[1]):
        cell, dev = cells[:, c].flatten(), mad[:, c].flatten().double()
        count = torch.bincount(cell, minlength=table.shape[1]).double()
        total = torch.bincount(cell, dev, minlength=table.shape[1])
        coarse_count = count.view(-1, per_activity).sum(1).repeat_interleave(per_activity)
        coarse_total = total.view(-1, per_activity).sum(1).repeat_interleave(per_activity)
        prior = 16.0  # samples' worth of the activity bucket's mean in every cell
        mean = (total + prior * (coarse_total + 0.5) / (coarse_count + 1)) / (count + prior)
        table[c] = torch.log2(mean / (2 * math.log(2))).clamp(min=_coder.SCALE_LOG2_MIN).float()


def photo_model(model: UnzNet, constants: np.ndarray | None = None) -> codec.PhotoModel:
    """The photo tool with the model's scale table: with `constants`, the shipped kind; without,
    the parameter planes of a float64 copy of the network."""
    table = np.ascontiguousarray(model.scale_table_index().detach().cpu().numpy().astype(np.int32))
    if constants is not None:
        return codec.PhotoModel(table, constants)
    network = copy.deepcopy(model).cpu().double().eval()
    return codec.PhotoModel(table, np.zeros(_coder.num_param_planes(model.config.channels), np.int32), network)


def evaluate(model: UnzNet, files: list[Path]) -> float:
    """Real bits per subpixel of the codec with the network's parameter planes on the evaluation photos."""
    photo = photo_model(model)
    bits = samples = 0
    for f in files:
        planes = planes_of(Image.open(f))
        if planes.shape[0] != model.config.channels:
            continue
        bits += 8 * codec.encode_planes(photo, planes).size
        samples += planes.size
    return bits / max(samples, 1)


class CodeLength(torch.nn.Module):
    """The training objective as a module, so that DistributedDataParallel sees every parameter
    (the entropy tables are used outside UnzNet.forward)."""

    def __init__(self, model: UnzNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, classical: pixelmodel.Classical) -> torch.Tensor:
        return bits_per_subpixel(self.model, x, classical)


def setup_distributed(device: str) -> tuple[int, int]:
    """(rank, world size); under torchrun, joins the process group (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), world


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    rank, world = setup_distributed(device)
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    main_process = rank == 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = image_files(args.data)
    eval_files = image_files(args.eval) if args.eval else []
    config = ModelConfig(channels=args.channels, width=args.width, up_width=args.up_width, latent=args.latent)
    run_info = {
        "config": config.to_dict(), "seed": args.seed, "data_hash": data_hash(files), "steps": args.steps,
        "batch": args.batch, "crop": args.crop, "lr": args.lr, "reductions": list(REDUCTIONS),
        "processes": world, "command": " ".join(sys.argv),
    }
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed * 1000 + rank)  # each process draws its own crops
    model = UnzNet(config)
    # The entropy tables are a few hundred free numbers each: they get a larger step.
    tables = [model.log_scale_table, model.z_log_scale]
    network = [p for p in model.parameters() if all(p is not t for t in tables)]
    optimizer = torch.optim.AdamW(
        [{"params": network, "lr_scale": 1.0}, {"params": tables, "lr_scale": args.table_lr_scale}],
        lr=args.lr, weight_decay=0.0,
    )
    step, elapsed = 0, 0.0
    ckpt_path = out / "ckpt.pt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step, elapsed = ckpt["step"], ckpt["elapsed"]
        if main_process:
            rng.setstate(ckpt["rng"])
        print(f"resumed at step {step}")
    images = load_training_set(files, args.channels, progress=main_process)
    if main_process:
        print(f"{len(images)} training images from {len(files)} photographs, data hash {run_info['data_hash']}")
    if step == 0:  # every process computes it; DDP then broadcasts rank 0's parameters anyway
        init_scale_table(model, sample_batch(images, 64, args.crop, random.Random(args.seed)))
    model.to(device)
    objective: torch.nn.Module = CodeLength(model)
    if world > 1:
        objective = torch.nn.parallel.DistributedDataParallel(objective)

    def checkpoint() -> None:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                    "elapsed": elapsed, "rng": rng.getstate()}, ckpt_path)
        meta = {"training": json.dumps(dict(run_info, steps_done=step))}
        (out / "model.safetensors").write_bytes(serialize_models({config.channels: model}, {config.channels: photo_model(model, np.zeros(_coder.num_param_planes(config.channels), np.int32))}, meta))

    log = open(out / "log.txt", "a") if main_process else None
    bar = tqdm(total=args.steps, initial=step, dynamic_ncols=True, mininterval=5, disable=not main_process)
    last_save = time.time()
    while step < args.steps:
        t0 = time.time()
        warm = step < args.warmup
        lr = args.lr * ((step + 1) / args.warmup if warm else 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in optimizer.param_groups:
            g["lr"] = lr * g["lr_scale"]
        x, classical = sample_batch(images, args.batch, args.crop, rng)
        loss = objective(x.to(device), tuple(t.to(device) for t in classical))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        elapsed += time.time() - t0
        if not main_process:
            continue
        bar.update(1)
        bar.set_postfix(bpsp=f"{loss.item():.3f}", lr=f"{lr:.1e}")
        line = {"step": step, "bpsp": round(loss.item(), 4), "time": round(elapsed, 1)}
        if eval_files and (step % args.eval_every == 0 or step == args.steps):
            line["eval_bpsp"] = round(evaluate(model, eval_files), 4)
            bar.write(f"step {step}: eval {line['eval_bpsp']} bpsp ({elapsed / 60:.1f} min)")
        log.write(json.dumps(line) + "\n")
        log.flush()
        if time.time() - last_save > 120 or step == args.steps or "eval_bpsp" in line:
            checkpoint()
            last_save = time.time()
    bar.close()
    if world > 1:
        torch.distributed.destroy_process_group()


def fitted_photo_model(model: UnzNet, files: list[Path]) -> tuple[codec.PhotoModel, dict]:
    """The shipped photo tool of a trained model: its scale table and the constants fitted on
    `files` reduced FIT_REDUCTION times, from the mean of the network's planes there."""
    network = photo_model(model)
    groups = []
    for f in files:
        planes = planes_of(to_mode(Image.open(f), model.config.channels).reduce(FIT_REDUCTION))
        groups.append(np.ascontiguousarray(planes[codec.coding_order(len(planes))]))
    pixels = np.array([g[0].size for g in groups], np.float64)
    means = sum(n * network.parameters(*g.shape[1:], range(g.shape[1])).reshape(len(network.constants), -1).mean(1)
                for n, g in zip(pixels, groups)) / pixels.sum()
    start = photo_model(model, np.rint(means).astype(np.int32))
    constants, fitted = fit_constants(start, groups)
    network_bytes = sum(len(codec.encode_samples(network, g)) for g in groups)
    fit = {"reduction": FIT_REDUCTION, "files": len(files), "data_hash": data_hash(files),
           "network_bytes": network_bytes, "constant_bytes": fitted}
    return photo_model(model, constants), fit


def export(args: argparse.Namespace) -> None:
    """Combine finished runs (one colour, one grayscale; a run's folder, or a weights file such
    as the shipped one, whose context networks are kept) into the shipped weights file, with
    constants fitted on --data."""
    networks, photo, metadata = {}, {}, {}
    files = image_files(args.data)
    for run in map(Path, args.runs):
        blob = (run if run.is_file() else run / "model.safetensors").read_bytes()
        run_networks, meta = read_networks(blob)
        for channels, network in run_networks.items():
            key = MODEL_KEYS[channels]
            networks[channels] = network
            photo[channels], fit = fitted_photo_model(network, files)
            if run.is_file():  # a weights file keeps its context networks (finetune/context.py installs them)
                kept = parse_models(blob).for_channels(channels).context_networks
                photo[channels] = dataclasses.replace(photo[channels], context_networks=kept)
                metadata.update({k: v for k, v in meta.items() if k.startswith(f"{key}.{CONTEXT_NETWORK}")})  # their training
            print(f"{key}: constants {photo[channels].constants.tolist()}, {fit}", flush=True)
            metadata[f"{key}.training"] = meta.get("training") or meta[f"{key}.training"]
            metadata[f"{MODEL_KEYS[channels]}.constants"] = json.dumps(fit)
    Path(args.output).write_bytes(serialize_models(networks, photo, metadata))
    print(f"wrote {args.output} ({os.path.getsize(args.output)} bytes)")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:
        p = argparse.ArgumentParser(prog="train export")
        p.add_argument("runs", nargs="+", help="run folders, or weights files")
        p.add_argument("--data", default="data/train", help="training images, on which the constants are fitted")
        p.add_argument("-o", "--output", required=True)
        return export(p.parse_args(argv[1:]))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, choices=(1, 3), default=3)
    p.add_argument("--data", default="data/train")
    p.add_argument("--eval", default="", help="folder of evaluation photos (never trained on)")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--table-lr-scale", type=float, default=5.0)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--up-width", type=int, default=8)
    p.add_argument("--latent", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    p.add_argument("--device", default="", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--eval-every", type=int, default=250)
    train(p.parse_args(argv))


if __name__ == "__main__":
    main()
