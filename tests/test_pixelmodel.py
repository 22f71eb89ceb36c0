"""The training twin of the pixel model predicts the coder's real code length, and the network's
exact path (adapted files' parameter planes) is exact."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from pillow_unz import _coder, codec, pixelmodel
from pillow_unz.model import num_levels
from pillow_unz.weights import load_models


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("network", [None, 0, 1])
def test_training_loss_is_the_real_code_length(sample: Image.Image, mode: str, network: int | None) -> None:
    """The teacher-forced twin of the photo tool, classical or with a context network (whose
    outputs the coder computes from the pixels alone), within 1% of the coded size of its
    logistics (format 8); the coder's refinement of their shape and the online readout (format 10)
    code the photo smaller still."""
    img = sample.convert(mode)
    a = np.asarray(img)
    planes = np.ascontiguousarray(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    photo = load_models().for_channels(len(planes))
    ordered = np.ascontiguousarray(planes[codec.coding_order(len(planes))])
    net = photo.context_network(network)
    coded = codec.encode_samples(photo, ordered, net, revision=8)
    assert np.array_equal(codec.decode_samples(photo, coded, img.height, img.width, net, revision=8), ordered)
    refined = codec.encode_samples(photo, ordered, net)
    assert np.array_equal(codec.decode_samples(photo, refined, img.height, img.width, net), ordered)
    assert len(refined) < len(coded)
    x = torch.from_numpy(ordered).long()[None]
    params = torch.from_numpy(photo.constants).view(1, -1, 1, 1).expand(1, -1, *x.shape[-2:]).clone()
    mean8, spread, feedback = pixelmodel.classical_prediction(x)
    if net is not None:
        correction, offset = torch.from_numpy(_coder.context_outputs(ordered, net.coder_layers())).long()[:, None]
        mean8, params[:, : len(planes)] = mean8 + correction, params[:, : len(planes)] + offset
    twin = pixelmodel.pixel_bits(x, params, torch.from_numpy(photo.scale_table).float(), (mean8, spread, feedback)).sum().item()
    real = 8 * (len(coded) - 4 * (_coder.num_bands(img.height) - 1))  # without the band table
    assert abs(twin - real) / real < 0.01


def test_exact_network_ignores_float_environment(sample: Image.Image) -> None:
    """The decoder's parameter planes do not change with thread count or oneDNN."""
    model = load_models().network(3)
    z = torch.from_numpy(np.random.default_rng(0).integers(-5, 6, (1, 8, 15, 20))).double()
    with torch.no_grad():
        reference = model.decode(z, 240, 320)
    reference_zero = model.parameter_planes(240, 320, range(240))  # what adapted files decode with: z = 0
    threads, mkldnn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    try:
        for n, onednn in ((1, True), (3, False)):
            torch.set_num_threads(n)
            torch.backends.mkldnn.enabled = onednn
            with torch.no_grad():
                assert torch.equal(model.decode(z, 240, 320), reference)
            assert np.array_equal(model.parameter_planes(240, 320, range(240)), reference_zero)
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = mkldnn


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("channels", [3, 1])
def test_exact_network_same_on_cuda(channels: int) -> None:
    """The decoder's parameter planes on a CUDA device are the CPU's, with the shipped weights
    and with every weight moved (as adapters move them), at a size of odd sides."""
    model = copy.deepcopy(load_models().network(channels))  # the shared one stays on the CPU
    for moved in (False, True):
        if moved:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())).to(p) * 0.3)
        cpu = model.cpu().parameter_planes(333, 517, range(333))
        assert np.array_equal(model.cuda().parameter_planes(333, 517, range(333)), cpu)


def test_decoding_some_rows_gives_those_rows_of_the_planes() -> None:
    """LoRA tuning decodes only the rows of its band; they must be the full planes' rows (the
    1000x1500 size makes the full-resolution path run in two bands of core rows)."""
    model = load_models().network(3)
    z = torch.from_numpy(np.random.default_rng(1).integers(-5, 6, (1, 8, 8, 12))).double()
    with torch.no_grad():
        full = model.decode(z, 1000, 1500)
        for rows in (range(0, 1000), range(77, 700), range(128, 256), range(999, 1000)):
            assert torch.equal(model.decode(z, 1000, 1500, rows), full[..., rows.start : rows.stop, :])


def test_least_squares_learns_an_image_correlation() -> None:
    """On a texture that none of the fixed predictors fits (each sample is about half NN plus
    half WW, with noise), the classical prediction comes close to the true one: the
    least-squares predictor learns the image's own weights."""
    rng = np.random.default_rng(0)
    h, w = 96, 128
    a = np.zeros((h + 2, w + 2))
    noise = rng.normal(0, 2, a.shape)
    for y in range(2, h + 2):
        for x in range(2, w + 2):
            a[y, x] = 0.49 * a[y - 2, x] + 0.49 * a[y, x - 2] + noise[y, x]
    p = np.clip(np.round(a + 128), 0, 255)
    truth = 0.49 * p[:-2, 2:] + 0.49 * p[2:, :-2] + 0.02 * 128  # (h, w): NN and WW of every sample
    p = p[2:, 2:]
    x = torch.from_numpy(p.astype(np.uint8)).long()[None, None]
    mean8, _, _ = pixelmodel.classical_prediction(x)
    settled = (slice(h // 2, None), slice(2, -2))  # once the fit has seen half the image
    learned = np.abs(p - mean8[0, 0].numpy() / 8)[settled].mean()
    best_possible = np.abs(p - truth)[settled].mean()
    west_north = np.abs(p[1:, 1:] - (p[:-1, 1:] + p[1:, :-1]) / 2)[settled].mean()  # (N + W) / 2
    assert learned < 1.1 * best_possible < 0.8 * west_north


def test_banded_encoder_equals_the_whole_image_pass(sample: Image.Image) -> None:
    """The encoder computes its full-resolution layers a band of rows at a time, from uint8
    samples: y must be the plain layer-by-layer pass over the whole float64 image, exactly."""
    model = load_models().network(3)
    planes = np.asarray(sample.resize((1100, 700))).transpose(2, 0, 1)  # 1100 wide: two bands of output rows
    x = torch.from_numpy(np.ascontiguousarray(planes))[None]
    with torch.no_grad():
        h = model.stem((x.double() - 127.5) / 64.0).relu()
        for _ in range(num_levels(700, 1100)):
            h = model.down(h).relu()
        assert torch.equal(model.encode(x), model.encode_core(h))


def test_chunked_decoder_equals_the_whole_image_pass() -> None:
    """The decoder's full-resolution path runs over chunks of rows: the planes must be the
    plain level-by-level pass over the whole image, exactly."""
    from pillow_unz.fixedpoint import quantize

    model = load_models().network(3)
    z = torch.from_numpy(np.random.default_rng(2).integers(-5, 6, (1, 8, 11, 16))).double()
    height, width = 1300, 2000  # chunks of 64 rows
    with torch.no_grad():
        h = model.decode_core(z)
        for _ in range(num_levels(height, width)):
            h = model.up(h).relu()
        planes = quantize(model.head(h)[..., :height, :width] * model.param_steps, 0, float("inf"))
        plain = planes.clamp(-model.param_limits, model.param_limits)
        assert torch.equal(model.decode(z, height, width), plain)
