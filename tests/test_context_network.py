"""The learned photo tool (csrc/context_network.h, pillow_unz/context_network.py) and the effort
levels that choose it: the coder computes exactly what the specification says, files of every
effort decode bit-exactly, and bad networks or bands are refused."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pillow_unz import _coder, api, codec, format as fmt, tools
from pillow_unz.context_network import ContextNetwork
from pillow_unz.weights import load_models

from .test_tools import band_tools


def random_network(channels: int, widths: tuple[int, ...], seed: int = 0, inputs: int = _coder.CONTEXT_SIZE) -> ContextNetwork:
    """Weights at their limits' scale, so that clipping and sparse activations both happen."""
    rng = np.random.default_rng(seed)
    layers = []
    for width in (*widths, 2):
        w = rng.integers(-_coder.NET_WEIGHT_LIMIT, _coder.NET_WEIGHT_LIMIT + 1, (channels, width, inputs)).astype(np.int16)
        b = rng.integers(-(1 << 20), 1 << 20, (channels, width)).astype(np.int32)
        layers.append((w, b, 16))
        inputs = width
    return ContextNetwork(tuple(layers))


@pytest.mark.parametrize("widths", [(), (32,), (64, 16), (48, 17)])  # every vector count, odd widths
@pytest.mark.parametrize("inputs", [_coder.NARROW_CONTEXT_SIZE, _coder.CONTEXT_SIZE])
def test_coder_computes_the_specification(small: Image.Image, widths: tuple[int, ...], inputs: int) -> None:
    planes = np.ascontiguousarray(np.asarray(small).transpose(2, 0, 1)[codec.coding_order(3)])
    network = random_network(3, widths, inputs=inputs)
    expected = network.outputs(_coder.classical_contexts(planes))
    for kernel in ["", *_coder.context_kernels()]:  # the coder's, and every one this processor runs
        got = _coder.context_outputs(planes, network.coder_layers(), 2, kernel)
        assert np.array_equal(got.transpose(1, 0, 2, 3), expected), kernel
    assert len(np.unique(expected)) > 10
    if not widths:  # large sums: the outputs' clipping is reached too
        assert (np.abs(expected[:, 0]) == _coder.NET_MAX_CORRECTION).any()


@pytest.mark.parametrize("channels", [1, 3])
def test_learned_tool_round_trip(small: Image.Image, channels: int) -> None:
    img = small if channels == 3 else small.convert("L")
    pixels = np.asarray(img)
    photo = load_models().for_channels(channels)
    ordered = np.ascontiguousarray((pixels[None] if channels == 1 else pixels.transpose(2, 0, 1))[codec.coding_order(channels)])
    network = random_network(channels, (16,), seed=channels)
    with codec.coding_threads(2):
        coded, classical = codec.encode_samples(photo, ordered, network), codec.encode_samples(photo, ordered)
        assert np.array_equal(codec.decode_samples(photo, coded, *ordered.shape[1:], network), ordered)
        assert np.array_equal(codec.decode_samples(photo, classical, *ordered.shape[1:]), ordered)
        assert coded != classical


def test_bands_of_different_networks_decode_in_one_call(sample: Image.Image) -> None:
    """Each band may take its own context network (or none): one call decodes them side by
    side, as the encoder's choice per band needs, and refuses networks that do not match."""
    pixels = np.tile(np.asarray(sample).transpose(2, 0, 1), (1, 3, 1))[codec.coding_order(3)]  # 720 rows: 3 bands
    planes = np.ascontiguousarray(pixels)
    photo = load_models().for_channels(3)
    networks = [None, random_network(3, (16,), seed=1).coder_layers(), photo.context_networks[1].coder_layers()]
    assert _coder.num_bands(planes.shape[1]) == len(networks)
    streams = [_coder.encode_pixels(planes, photo.constants, photo.scale_table, 1, band, 1, network=net)[0]
               for band, net in enumerate(networks)]
    out = np.zeros_like(planes)
    _coder.decode_pixels(streams, photo.constants, photo.scale_table, 3, out, networks=networks)
    assert np.array_equal(out, planes)
    with pytest.raises(ValueError, match="one per stream"):
        _coder.decode_pixels(streams, photo.constants, photo.scale_table, 3, out, networks=networks[:2])
    with pytest.raises(ValueError, match="not both"):
        _coder.decode_pixels(streams, photo.constants, photo.scale_table, 3, out, network=networks[1], networks=networks)


def test_outer_ring_is_what_the_whole_context_adds(small: Image.Image) -> None:
    """A network that reads the whole context but gives the outer ring no weight codes what
    the same network reading the narrow context codes, byte for byte; with weight there, not."""
    photo = load_models().for_channels(3)
    planes = np.ascontiguousarray(np.asarray(small).transpose(2, 0, 1)[codec.coding_order(3)])
    narrow = random_network(3, (16,), seed=5, inputs=_coder.NARROW_CONTEXT_SIZE)
    ring = (3, 16, _coder.CONTEXT_SIZE - _coder.NARROW_CONTEXT_SIZE)
    (w, b, shift), *rest = narrow.layers
    unseeing = ContextNetwork(((np.concatenate([w, np.zeros(ring, np.int16)], 2), b, shift), *rest))
    seeing = ContextNetwork(((np.concatenate([w, np.full(ring, 999, np.int16)], 2), b, shift), *rest))
    networks = (narrow, unseeing, seeing)
    coded = [codec.encode_samples(photo, planes, n) for n in networks]
    assert coded[0] == coded[1] != coded[2]
    for stream, network in zip(coded, networks):
        assert np.array_equal(codec.decode_samples(photo, stream, *planes.shape[1:], network), planes)


@pytest.mark.parametrize("layers, message", [
    ([], "layers"),
    ([(np.zeros((3, 2, 5), np.int16), np.zeros((3, 2), np.int32), 0)], "chain"),
    ([(np.full((3, 2, _coder.CONTEXT_SIZE), _coder.NET_WEIGHT_LIMIT + 1, np.int16), np.zeros((3, 2), np.int32), 0)], "range"),
    ([(np.zeros((3, 2, _coder.CONTEXT_SIZE), np.int16), np.full((3, 2), 1 << 30, np.int32), 0)], "range"),
    ([(np.zeros((3, 2, _coder.CONTEXT_SIZE), np.int16), np.zeros((3, 2), np.int32), 31)], "shift"),
    ([(np.zeros((3, 3, _coder.CONTEXT_SIZE), np.int16), np.zeros((3, 3), np.int32), 0)], "outputs"),
])
def test_bad_networks_are_refused(layers: list, message: str) -> None:
    planes = np.zeros((3, 4, 4), np.uint8)
    with pytest.raises(ValueError, match=message):
        _coder.encode_pixels(planes, np.zeros(6, np.int32), load_models().for_channels(3).scale_table, network=layers)
    with pytest.raises(ValueError):
        ContextNetwork(tuple(layers))


def test_wide_samples_take_no_network() -> None:
    planes = np.zeros((1, 4, 4), np.uint16)
    layers = random_network(1, ()).coder_layers()
    with pytest.raises(ValueError, match="8-bit"):
        _coder.encode_pixels(planes, np.zeros(2, np.int32), load_models().for_channels(1).scale_table, bits=12, network=layers)


@pytest.mark.parametrize("effort", sorted(tools.EFFORTS))
def test_every_effort_round_trips(small: Image.Image, effort: int) -> None:
    pixels = np.asarray(small)
    data = api.compress(pixels, "RGB", effort=effort)
    assert np.array_equal(api.decompress(data).pixels, pixels)
    assert fmt.read(io.BytesIO(data)).header.effort == effort
    used = set(band_tools(data)[0])
    if not tools.EFFORTS[effort].photo:
        assert used <= {tools.FLAT, tools.DEFLATE, tools.SCREEN}


def test_default_effort_uses_the_context_network(small: Image.Image) -> None:
    named = max(k for effort in tools.EFFORTS.values() for k in effort.networks)
    for channels in (1, 3):  # the shipped models hold every network the efforts name
        assert len(load_models().for_channels(channels).context_networks) == named + 1
    data = api.compress(np.asarray(small), "RGB")
    assert np.array_equal(api.decompress(data).pixels, np.asarray(small))
    assert tools.LEARNED in band_tools(data)[0]
    assert fmt.read(io.BytesIO(data)).header.effort == tools.DEFAULT_EFFORT


@pytest.mark.parametrize("effort", [0, 10, 7.0, True, "7"])
def test_bad_effort_is_refused(small: Image.Image, effort: object) -> None:
    with pytest.raises(ValueError, match="effort"):
        api.compress(np.asarray(small), "RGB", effort=effort)
    with pytest.raises(ValueError, match="effort"):
        small.save(io.BytesIO(), format="UNZ", effort=effort)


def test_save_takes_effort(small: Image.Image) -> None:
    fast, strong = io.BytesIO(), io.BytesIO()
    small.save(fast, format="UNZ", effort=1)
    small.save(strong, format="UNZ", effort=9)
    assert len(strong.getvalue()) < len(fast.getvalue())
    for buf, effort in ((fast, 1), (strong, 9)):
        buf.seek(0)
        with Image.open(buf) as back:
            assert np.array_equal(np.asarray(back), np.asarray(small))
        assert fmt.read(io.BytesIO(buf.getvalue())).header.effort == effort


def test_band_naming_a_missing_network_is_refused(small: Image.Image) -> None:
    pixels = np.asarray(small)
    photo = load_models().for_channels(3)
    missing = len(photo.context_networks)
    stream = tools.photo_prefix(tools.Way(missing, tools.NO_KEY)) + bytes(64)
    coded = codec.CodedPlanes(codec.join_streams([stream] * _coder.num_bands(pixels.shape[0])))
    with pytest.raises(ValueError, match="context network"):
        codec.decode_planes(photo, coded, *pixels.shape[:2])
