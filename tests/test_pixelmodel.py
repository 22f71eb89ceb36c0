"""The training twin of the pixel model predicts the coder's real code length, and the network's
exact path is exact."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pillow_unz import codec, pixelmodel
from pillow_unz.model import Z_MAX
from pillow_unz.weights import load_models


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_training_loss_is_the_real_code_length(sample: Image.Image, mode: str) -> None:
    img = sample.convert(mode)
    a = np.asarray(img)
    planes = np.ascontiguousarray(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    model = load_models().for_channels(len(planes))
    coded = codec.encode_planes(model, planes)
    assert np.array_equal(codec.decode_planes(model, coded, img.height, img.width), planes)
    x = torch.from_numpy(np.ascontiguousarray(planes[pixelmodel.coding_order(len(planes))])).long()[None]
    with torch.no_grad():
        z, params = model(x.double())
        twin = pixelmodel.pixel_bits(x, params, model.scale_table_index()).sum().item()
        twin += pixelmodel.latent_bits(z, model.z_scale_index(), Z_MAX).sum().item()
    real = 8 * (len(coded.pixels) + len(coded.latent))
    assert abs(twin - real) / real < 0.01


def test_exact_network_ignores_float_environment(sample: Image.Image) -> None:
    """The decoder's parameter planes do not change with thread count or oneDNN."""
    model = load_models().for_channels(3)
    z = torch.from_numpy(np.random.default_rng(0).integers(-5, 6, (1, 8, 15, 20))).double()
    reference = codec.parameter_planes(model, z, 240, 320)
    threads, mkldnn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    try:
        for n, onednn in ((1, True), (3, False)):
            torch.set_num_threads(n)
            torch.backends.mkldnn.enabled = onednn
            assert np.array_equal(codec.parameter_planes(model, z, 240, 320), reference)
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = mkldnn
