"""The training loop runs, alone and as two DistributedDataParallel processes, and its weights
export into a file the codec uses; the same models always make the same file."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pillow_unz import api
from pillow_unz.finetune import train
from pillow_unz.weights import load_models, parse_models, read_networks, serialize_models


@pytest.fixture(scope="module")
def photos(sample: Image.Image, tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for i in range(2):  # "full resolution" photographs: training reduces them 2x to 4x
        sample.rotate(180 * i).resize((640, 480)).save(folder / f"p{i}.png")
    return folder


def test_weights_bytes_depend_on_the_models_alone() -> None:
    """The file's hash is the model id: re-exporting the shipped models, whatever the order of
    their metadata, gives the shipped file."""
    data = load_models().data
    networks, metadata = read_networks(data)
    photo = parse_models(data).photo
    assert serialize_models(networks, photo, metadata) == data
    assert serialize_models(networks, photo, dict(reversed(list(metadata.items())))) == data


def test_training_steps_and_export(photos, tmp_path, small: Image.Image) -> None:
    args = ["--data", str(photos), "--steps", "3", "--crop", "48", "--batch", "2", "--eval-every", "3"]
    for channels, name in ((3, "rgb"), (1, "gray")):
        train.main(["--channels", str(channels), "--out", str(tmp_path / name), "--eval", str(photos), *args])
        log = [json.loads(line) for line in (tmp_path / name / "log.txt").read_text().splitlines()]
        assert [entry["step"] for entry in log] == [1, 2, 3] and "eval_bpsp" in log[-1]
    # resuming a finished run does nothing more
    train.main(["--channels", "1", "--out", str(tmp_path / "gray"), *args])
    assert len((tmp_path / "gray" / "log.txt").read_text().splitlines()) == 3

    weights = tmp_path / "w.safetensors"
    train.main(["export", str(tmp_path / "rgb"), str(tmp_path / "gray"), "--data", str(photos), "-o", str(weights)])
    models = parse_models(weights.read_bytes())
    assert json.loads(models.metadata["rgb.training"])["data_hash"] == train.data_hash(train.image_files(photos))
    fit = json.loads(models.metadata["gray.constants"])  # fitted by coded bytes: never worse than the network's planes
    assert fit["constant_bytes"] <= fit["network_bytes"] or fit["files"] == 0
    pixels = np.asarray(small)
    assert np.array_equal(api.decompress(api.compress(pixels, "RGB", models=models), models=models).pixels, pixels)

    # a weights file exports with its context networks and their training records
    shipped = tmp_path / "shipped.safetensors"
    shipped.write_bytes(load_models().data)
    train.main(["export", str(shipped), "--data", str(photos), "-o", str(weights)])
    again, before = parse_models(weights.read_bytes()), load_models()
    for channels in (1, 3):
        kept, shipped_networks = again.for_channels(channels).context_networks, before.for_channels(channels).context_networks
        assert len(kept) == len(shipped_networks) > 0
        for a, b in zip(kept, shipped_networks):
            ta, tb = a.to_tensors(""), b.to_tensors("")
            assert ta.keys() == tb.keys() and all(np.array_equal(ta[k], tb[k]) for k in ta)
    assert {k: v for k, v in again.metadata.items() if ".net" in k} == {k: v for k, v in before.metadata.items() if ".net" in k}


def test_two_process_distributed_training(photos, tmp_path) -> None:
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pillow_unz.finetune.train", "--channels", "3", "--data", str(photos), "--out", str(out),
           "--steps", "3", "--crop", "48", "--batch", "2", "--device", "cpu"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    models, meta = read_networks((out / "model.safetensors").read_bytes())
    assert json.loads(meta["training"])["processes"] == 2 and json.loads(meta["training"])["steps_done"] == 3
    assert 3 in models


def test_crops_come_only_from_images_large_enough(photos) -> None:
    import random

    images = train.load_training_set(train.image_files(photos), 3, progress=False)
    x, blend = train.sample_batch(images, 4, 200, random.Random(0))  # only the 2x reductions fit
    assert x.shape == (4, 3, 200, 200) and all(t.shape == x.shape for t in blend)
    with pytest.raises(ValueError, match="smaller --crop"):
        train.sample_batch(images, 1, 1000, random.Random(0))


def test_context_network_trains_packed_warm_and_on_the_clock(photos, tmp_path) -> None:
    """The context network's training from packed tiles (what a GPU machine gets), with crops cut
    by a worker process, then warm-started from that run and trained for a time instead of
    steps; each run writes a network the coder takes, with its lineage in the metadata."""
    from safetensors.numpy import load

    from pillow_unz import _coder
    from pillow_unz.context_network import ContextNetwork
    from pillow_unz.finetune import context
    from pillow_unz.weights import file_metadata

    packed = tmp_path / "packed"
    context.main(["pack", "--data", str(photos), "--out", str(packed), "--pixels", "40000", "--tile", "128"])
    # per photo: 2 tiles at full size and at 2x, 3x and 4x whole (under 40,000 pixels)
    assert sorted(p.suffix for p in packed.iterdir()) == [".unz"] * 12
    for f in sorted(photos.iterdir()):  # the whole ones are the reduced photo, pixel for pixel
        for r in (3, 4):
            with Image.open(packed / f"{f.stem}-r{r}-0.unz") as tile:
                assert np.array_equal(np.asarray(tile), np.asarray(Image.open(f).convert("RGB").reduce(r)))
    common = ["--data", str(packed), "--reductions", "1", "--skip=", "--channels", "1", "--hidden", "8",
              "--crop", "32", "--batch", "2"]
    context.main([*common, "--steps", "2", "--workers", "1", "--out", str(tmp_path / "first")])
    shapeless = [a for a in common if a not in ("--hidden", "8")]  # --init takes the run's shape
    context.main([*shapeless, "--minutes", "0.01", "--init", str(tmp_path / "first"), "--out", str(tmp_path / "second")])
    with pytest.raises(SystemExit, match="1-channel network"):
        context.main([*shapeless, "--channels", "3", "--init", str(tmp_path / "first"), "--out", str(tmp_path / "third")])
    blob = (tmp_path / "second" / "network.safetensors").read_bytes()
    network = ContextNetwork.from_tensors(load(blob), "")
    assert network.channels == 1 and network.layers[0][0].shape == (1, 8, _coder.CONTEXT_SIZE)  # a new one reads all
    meta = json.loads(file_metadata(blob)["training"])
    assert meta["steps"] >= 1 and meta["init"]["steps"] == 2 and meta["device"] == "cpu"


def test_readout_correction_learns_from_the_upper_half() -> None:
    """Training's stand-in for the coder's online readout: a ridge fit of the residuals on the
    hidden features of a crop's upper half, applied to its lower half only."""
    import torch

    from pillow_unz.finetune import context

    g = torch.Generator().manual_seed(0)
    features = torch.rand(2, 3, 16, 8, 5, generator=g)
    weights = torch.randn(2, 3, 1, 1, 5, generator=g)
    residual = (features * weights).sum(-1)  # a linear function of the features, within the clip
    residual.requires_grad_(True)
    correction = context.readout_correction(features, residual, ridge=1e-8)
    assert correction.shape == residual.shape and not correction[:, :, :8].any()
    assert torch.allclose(correction[:, :, 8:], residual[:, :, 8:], atol=1e-3)
    correction.sum().backward()  # differentiable: the network learns through it
    assert residual.grad[:, :, :8].abs().sum() > 0


def test_context_network_trains_on_from_a_shipped_one(photos, tmp_path, small: Image.Image) -> None:
    """Training can go on from a network of the weights file, whose run is gone: its integers as
    floats compute what the coder does, up to the floors; install --keep keeps the replaced
    weights under their model id (test_corrupt: the files they coded decode with them)."""
    import torch
    from safetensors.numpy import load

    from pillow_unz import _coder
    from pillow_unz.context_network import ContextNetwork
    from pillow_unz.finetune import context
    from pillow_unz.weights import earlier_weights_name, file_metadata, kept_whole

    shipped = load_models()
    planes = np.asarray(small.convert("L"))[None]
    crop = context.Sample(planes)
    limits = np.array([_coder.NET_MAX_CORRECTION, _coder.NET_MAX_SCALE_OFFSET]).reshape(1, 2, 1, 1)
    for k, network in enumerate(shipped.for_channels(1).context_networks):
        model = context.dequantize(network, torch.rand(_coder.CONTEXT_SIZE) + 0.5)
        with torch.no_grad():
            floats = np.clip(model(crop.context)[0].numpy(), -limits, limits)
        off = np.abs(floats - network.outputs(crop.context[0].numpy()))  # in eighths
        assert off.mean() < 1 and np.quantile(off, 0.99) < 3, k  # (a few hidden values reach the coder's clip)

    run = tmp_path / "on"
    options = ["--data", str(photos), "--channels", "1", "--crop", "32", "--batch", "2", "--steps", "1", "--out", str(run)]
    with pytest.raises(SystemExit, match="--partner 99: the gray model has networks 0 to"):
        context.main([*options, "--partner", "99"])
    context.main([*options, "--init-network", "0", "--partner", "1"])
    blob = (run / "network.safetensors").read_bytes()
    assert ContextNetwork.from_tensors(load(blob), "").layers[0][0].shape == (1, 32, 36)  # network 0's shape
    assert json.loads(file_metadata(blob)["training"])["init"] == {"network": 0, "model_id": shipped.model_id.hex()}
    with pytest.raises(SystemExit, match="--readout and --partner"):
        context.main([*options, "--init-network", "1", "--partner", "3", "--readout"])
    readout = tmp_path / "readout"  # (a fresh run: one in `run` would resume from its checkpoint)
    context.main([*options[:-1], str(readout), "--init-network", "1", "--readout"])
    assert json.loads(file_metadata((readout / "network.safetensors").read_bytes())["training"])["readout"]

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(shipped.data)
    context.main(["install", str(run), "--weights", str(weights), "--at", "1", "--keep"])
    installed = parse_models(weights.read_bytes())
    assert kept_whole((tmp_path / earlier_weights_name(shipped.model_id)).read_bytes(), installed.data) == shipped.data
    assert installed.model_id != shipped.model_id

    def same(a: ContextNetwork, b: ContextNetwork) -> bool:
        return all(np.array_equal(t, b.to_tensors("")[name]) for name, t in a.to_tensors("").items())

    for channels, replaced in ((3, None), (1, 1)):  # network 1 of the gray model, the others kept
        now, before = installed.for_channels(channels).context_networks, shipped.for_channels(channels).context_networks
        assert [same(a, b) for a, b in zip(now, before)] == [k != replaced for k in range(len(before))]


def test_grown_network_starts_as_the_one_it_grew_from(photos, tmp_path, small: Image.Image, capsys) -> None:
    """--widen and --inputs grow a shipped network's hidden layers and the context it reads
    without changing its outputs; a network wider than the coder takes ends as a float
    checkpoint, which `score` measures beside the weights file's networks."""
    import torch
    from safetensors.numpy import load

    from pillow_unz import _coder
    from pillow_unz.context_network import ContextNetwork
    from pillow_unz.finetune import context

    crop = context.Sample(np.asarray(small.convert("L"))[None])
    norm = torch.rand(_coder.CONTEXT_SIZE) + 0.5
    shipped = load_models().for_channels(1).context_networks
    k = next(k for k, n in enumerate(shipped) if n.inputs == _coder.NARROW_CONTEXT_SIZE)  # one to grow
    model = context.dequantize(shipped[k], norm)
    big = context.grown(model, 2 * _coder.NET_MAX_WIDTH, _coder.CONTEXT_SIZE, norm)
    assert big.linears(0)[0].weight.shape == (2 * _coder.NET_MAX_WIDTH, _coder.CONTEXT_SIZE)
    with torch.no_grad():
        assert torch.equal(big(crop.context), model(crop.context))

    options = ["--data", str(photos), "--channels", "1", "--crop", "32", "--batch", "2", "--steps", "1"]
    with pytest.raises(SystemExit, match="--widen, --inputs: more units or inputs"):
        context.main([*options, "--widen", "128", "--out", str(tmp_path / "none")])  # nothing to grow from
    context.main([*options, "--init-network", str(k), "--inputs", str(_coder.CONTEXT_SIZE), "--out", str(tmp_path / "whole")])
    whole = ContextNetwork.from_tensors(load((tmp_path / "whole" / "network.safetensors").read_bytes()), "")
    assert whole.inputs == _coder.CONTEXT_SIZE
    run = tmp_path / "wide"
    context.main([*options, "--init-network", str(k), "--widen", "128", "--out", str(run)])
    assert not (run / "network.safetensors").exists() and context.run_model(run).linears(0)[0].out_features == 128
    capsys.readouterr()
    context.main(["score", "net1", str(run), "--channels", "1", "--eval", str(photos)])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["classical", "net1", str(run)]
