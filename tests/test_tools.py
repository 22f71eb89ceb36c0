"""The band coding tools (pillow_unz/tools.py): screen content, flat bands and the deflate floor.
Sizes are compared with PNG and WebP as Pillow writes them; every file is decoded and compared."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pillow_unz import _coder, api, codec, format as fmt, samples, tools
from pillow_unz.weights import load_models

from .conftest import DATA, mixed, with_alpha
from .drawn import line_chart, text_and_shapes

SCREEN_SET = sorted((DATA / "screen").glob("*.png"))


def coded(img: Image.Image) -> bytes:
    """img as .unz, checked to decode to the same pixels."""
    pixels = np.asarray(img)
    data = api.compress(pixels, img.mode)
    assert np.array_equal(api.decompress(data).pixels, pixels)
    return data


def band_tools(data: bytes) -> list[list[int]]:
    """The tool of every band, per plane group."""
    unz = fmt.read(io.BytesIO(data))
    height = fmt.coded_shape(unz.header, unz.repeats)[0]
    return [[s[0] for s in codec.split_streams(g.pixels, _coder.num_bands(height, g.band_height))] for g in unz.groups]


def size_as(img: Image.Image, fmt_name: str, **options) -> int:
    buf = io.BytesIO()
    img.save(buf, format=fmt_name, **options)
    return len(buf.getvalue())


def png_size(img: Image.Image) -> int:
    return size_as(img, "PNG", optimize=True)


def webp_size(img: Image.Image) -> int:
    return size_as(img, "WEBP", lossless=True, method=6, quality=100, exact=True)


def test_dithered_palette_photo_takes_the_screen_tool(sample: Image.Image, monkeypatch) -> None:
    """A photo cut to 64 dithered colours repeats few neighbours, but its colours are few: the
    screen tool codes it, smaller than the photo tool does."""
    grain = np.random.default_rng(0).normal(0, 12, (sample.height, sample.width, 1))  # a noisy photo
    noisy = Image.fromarray(np.clip(np.asarray(sample) + grain, 0, 255).astype(np.uint8))
    img = noisy.quantize(64, dither=Image.Dither.FLOYDSTEINBERG).convert("RGB")
    assert tools.repeats(np.asarray(img).transpose(2, 0, 1)) < tools.SCREEN_MIN_REPEATS
    data = coded(img)
    assert band_tools(data) == [[tools.SCREEN]]
    monkeypatch.setattr(tools, "SCREEN_MAX_COLOURS", 0)
    assert len(data) < 0.8 * len(coded(img))


def test_bands_are_as_tall_as_the_file_says(sample: Image.Image, monkeypatch) -> None:
    """The encoder makes bands of up to 1,024 rows, two at least where there are more than 256
    rows; the file says how tall they are, and the decoder takes them so."""
    assert [tools.band_height(h) for h in (1, 256, 512, 513, 1074, 2048, 2049, 5000)] == [256, 256, 256, 512, 768, 1024, 1024, 1024]
    assert [_coder.num_bands(h, tools.band_height(h)) for h in (256, 257, 1024, 2048, 2049, 5000)] == [1, 2, 2, 2, 3, 5]
    gray = np.asarray(sample.convert("L"))
    strip = Image.fromarray(np.ascontiguousarray(np.vstack([gray, gray[::-1], gray])[:600, 100:124]), "L")
    for height, bands in ((None, 2), (256, 3), (255 * 256, 1)):
        if height:
            monkeypatch.setattr(tools, "band_height", lambda h, height=height: height)
        unz = fmt.read(io.BytesIO(coded(strip)))
        assert (unz.groups[0].band_height, len(band_tools(coded(strip))[0])) == (height or 512, bands)


def test_drawings_are_coded_in_one_band_where_that_codes_smaller() -> None:
    """A drawing whose bands take other tools than the photo one is coded in one band too, and
    the smaller kept: here the one band (the screen model's colours and matches serve it all)."""
    img = text_and_shapes()  # 600 rows: two bands of 300 by tools.band_height
    planes = np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1)[codec.coding_order(3)])
    photo = load_models().for_channels(3)
    two, used = codec._encode_in_bands(photo, planes, samples.Unchanged(), tools.DEFAULT_EFFORT, 512)
    one, _ = codec._encode_in_bands(photo, planes, samples.Unchanged(), tools.DEFAULT_EFFORT, 768)
    assert tools.SCREEN in used and one.size < two.size
    for c in (two, one):  # each layout decodes to the drawing
        assert np.array_equal(codec.decode_planes(photo, c, *planes.shape[1:]), np.asarray(img).transpose(2, 0, 1))
    chosen = codec.encode_planes(photo, np.asarray(img).transpose(2, 0, 1))
    assert chosen.band_height == 768 and chosen.pixels == one.pixels
    unz = fmt.read(io.BytesIO(coded(img)))
    assert unz.repeats is None and unz.groups[0].band_height == 768


def test_black_image_is_one_flat_band() -> None:
    """One colour everywhere: the file codes it as one flat band, smaller than leaving out every
    repeated row and column (RPTS) and coding the one pixel left (test_repeats: the same)."""
    data = coded(Image.new("RGB", (2000, 2000)))
    assert len(data) <= 80
    unz = fmt.read(io.BytesIO(data))
    assert unz.repeats is None and unz.groups[0].band_height == 2048
    assert band_tools(data) == [[tools.FLAT]]


def test_screen_set_beats_webp_in_total_and_png_on_every_file() -> None:
    assert len(SCREEN_SET) >= 8
    ours = webp = 0
    for path in SCREEN_SET:
        img = Image.open(path)
        size = len(coded(img))
        assert size <= png_size(img), path.name
        ours, webp = ours + size, webp + webp_size(img)
    assert ours <= webp


@pytest.mark.parametrize("draw", [text_and_shapes, line_chart])
def test_drawn_images_at_most_webp(draw) -> None:
    img = draw()
    data = coded(img)
    assert len(data) <= webp_size(img)
    assert set(band_tools(data)[0]) == {tools.SCREEN}


def test_noise_costs_no_more_than_png() -> None:
    """Nothing compresses noise; the deflate floor keeps it within a few header bytes of PNG."""
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 200, 3), np.uint8), "RGB")
    assert len(coded(img)) <= png_size(img) + 32


def test_each_band_takes_its_own_tool(sample: Image.Image) -> None:
    data = coded(mixed(sample))
    [[top, bottom]] = band_tools(data)
    assert top == tools.SCREEN and bottom in tools.PHOTO_TOOLS


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA"])
def test_gray_and_alpha_planes_take_the_screen_tool(mode: str) -> None:
    img = with_alpha(text_and_shapes(320, 200).convert("L")) if mode == "LA" else text_and_shapes(320, 200)
    img = img.convert(mode) if mode != "LA" else img
    data = coded(img)
    assert all(t in (tools.SCREEN, tools.FLAT, tools.DEFLATE) for group in band_tools(data) for t in group)


def test_band_tool_runs() -> None:
    assert tools.runs([0, 1, 2, 5, 6, 9], longest=2) == [(0, 2), (2, 1), (5, 2), (9, 1)]
    assert tools.runs([]) == []


def photo_keys(data: bytes) -> list[int]:
    """The statistics key of every photo band of a one-group file."""
    unz = fmt.read(io.BytesIO(data))
    streams = codec.split_streams(unz.groups[0].pixels, _coder.num_bands(unz.header.height))
    return [tools.photo_header(s, unz.header.version)[0].key for s in streams if s[0] in tools.PHOTO_TOOLS]


@pytest.mark.parametrize("bits", [8, 12])
def test_every_statistics_key_round_trips(sample: Image.Image, bits: int) -> None:
    """Each key codes its own stream, which decodes to the same samples (8-bit colour; 12-bit gray,
    whose level key takes the eighths of its wider range)."""
    photo = api.load_models().for_channels(3 if bits == 8 else 1)
    planes = np.ascontiguousarray(np.asarray(sample).transpose(2, 0, 1)[codec.coding_order(3)])
    if bits > 8:
        planes = planes[:1].astype(np.uint16) << 4 | planes[1:2] >> 4
    coded_streams = set()
    for key in tools.KEY_NAMES:
        streams = _coder.encode_pixels(planes, photo.constants, photo.scale_table, 2, bits=bits, stats_key=key)
        out = np.zeros_like(planes)
        _coder.decode_pixels(streams, photo.constants, photo.scale_table, 2, out, bits=bits, stats_keys=[key] * len(streams))
        assert np.array_equal(out, planes)
        coded_streams.add(b"".join(streams))
    assert len(coded_streams) == len(tools.KEY_NAMES)
    with pytest.raises(ValueError, match="statistics key"):
        _coder.encode_pixels(planes, photo.constants, photo.scale_table, 2, bits=bits, stats_key=len(tools.KEY_NAMES))


def test_codings_at_once_are_the_codings_one_by_one(sample: Image.Image) -> None:
    """The encoder codes a band every way it tries in one pass, over one classical prediction per
    fit memory: each way's streams are those it codes alone, and they decode."""
    photo = api.load_models().for_channels(3)
    planes = np.ascontiguousarray(np.asarray(sample).transpose(2, 0, 1)[codec.coding_order(3)])
    layers = {k: photo.context_network(k).coder_layers() for k in (0, 1)}
    codings = [(layers[1], tools.LEVEL_KEY, 9), (None, tools.NO_KEY, 11), (layers[0], tools.POSITION_KEY, 9),
               (layers[1], tools.POSITION_KEY, 9), (layers[1], tools.LEVEL_KEY, 8), (None, tools.NO_KEY, 9)]
    together = _coder.encode_pixels(planes, photo.constants, photo.scale_table, 2, codings=codings)
    assert len(together) == len(codings) == len({b"".join(streams) for streams in together})
    for (network, key, memory), streams in zip(codings, together):
        assert streams == _coder.encode_pixels(planes, photo.constants, photo.scale_table, 2, network=network,
                                               stats_key=key, fit_memory=memory)
        out = np.zeros_like(planes)
        _coder.decode_pixels(streams, photo.constants, photo.scale_table, 2, out, network=network,
                             stats_keys=[key] * len(streams), fit_memories=[memory] * len(streams))
        assert np.array_equal(out, planes)
    assert _coder.encode_pixels(planes, photo.constants, photo.scale_table, 2, codings=[c[:2] for c in codings[:1]]) == together[:1]
    with pytest.raises(ValueError, match="not both"):
        _coder.encode_pixels(planes, photo.constants, photo.scale_table, codings=codings, stats_key=tools.LEVEL_KEY)
    for bad in ([], [(None,)], [(None, len(tools.KEY_NAMES))], [(None, 0, 9, 9)], [(None, 0, max(tools.FIT_MEMORIES) + 1)]):
        with pytest.raises(ValueError, match="codings|statistics key|fit memory"):
            _coder.encode_pixels(planes, photo.constants, photo.scale_table, codings=bad)
    with pytest.raises(ValueError, match="fit memory"):
        _coder.decode_pixels(together[0], photo.constants, photo.scale_table, 2, np.zeros_like(planes),
                             fit_memories=[min(tools.FIT_MEMORIES) - 1] * len(together[0]))


def test_ways_race_over_a_bands_first_rows(sample: Image.Image) -> None:
    """With race_rows, of the ways over each fit memory only the one ahead after that many rows of
    a band codes the rest: each band has one stream a memory, the very one that way codes alone
    (so it decodes); the others are None. A band no taller than the race is coded every way."""
    photo = api.load_models().for_channels(3)
    planes = np.ascontiguousarray(np.asarray(sample).transpose(2, 0, 1)[codec.coding_order(3)])
    layers = {k: photo.context_network(k).coder_layers() for k in (0, 1)}
    codings = [(layers[1], tools.LEVEL_KEY, 9), (None, tools.NO_KEY, 9), (layers[0], tools.POSITION_KEY, 11),
               (layers[1], tools.LEVEL_KEY, 8)]
    alone = [_coder.encode_pixels(planes, photo.constants, photo.scale_table, 2, network=n, stats_key=k, fit_memory=m,
                                  band_height=128) for n, k, m in codings]
    raced = _coder.encode_pixels(planes, photo.constants, photo.scale_table, 2, codings=codings, band_height=128, race_rows=32)
    winners = []
    for band in range(_coder.num_bands(planes.shape[1], 128)):
        finished = [k for k in range(len(codings)) if raced[k][band] is not None]
        assert sorted(codings[k][2] for k in finished) == [8, 9, 11]
        assert all(raced[k][band] == alone[k][band] for k in finished)
        winners.append(min(finished, key=lambda k: len(raced[k][band])))
    out = np.zeros_like(planes)  # the winners' streams, each band with its way, decode to the planes
    _coder.decode_pixels([raced[k][band] for band, k in enumerate(winners)], photo.constants, photo.scale_table, 2, out,
                         networks=[codings[k][0] for k in winners], stats_keys=[codings[k][1] for k in winners],
                         fit_memories=[codings[k][2] for k in winners], band_height=128)
    assert np.array_equal(out, planes)
    every_way = _coder.encode_pixels(planes, photo.constants, photo.scale_table, 2, codings=codings, band_height=128,
                                     race_rows=120)  # as tall as the bands: no race
    assert every_way == alone
    for (network, key, memory), streams in zip(codings, alone):
        out = np.zeros_like(planes)
        _coder.decode_pixels(streams, photo.constants, photo.scale_table, 2, out, network=network,
                             stats_keys=[key] * len(streams), fit_memories=[memory] * len(streams), band_height=128)
        assert np.array_equal(out, planes)
    with pytest.raises(ValueError, match="race_rows"):
        _coder.encode_pixels(planes, photo.constants, photo.scale_table, codings=codings, race_rows=-1)
    # The encoder's race holds as many samples in wide bands as in the eval photos' 128 rows of 640.
    assert [tools.race_rows(w) for w in (1, 640, 641, 4352, 10**6)] == [128, 128, 128, 19, 16]


def test_jpeg_blocks_take_the_position_key(sample: Image.Image) -> None:
    """A decoded JPEG's 8x8 blocks: the encoder keeps the position key, which codes it smaller
    than the level key; a photo whose noise grows with its brightness (shot noise), without
    blocks, keeps the level key."""
    buf = io.BytesIO()
    sample.save(buf, format="JPEG", quality=30, subsampling=0)
    blocky = Image.open(buf).convert("RGB")
    assert set(photo_keys(coded(blocky))) == {tools.POSITION_KEY}
    photo = api.load_models().for_channels(3)
    planes = np.ascontiguousarray(np.asarray(blocky).transpose(2, 0, 1)[codec.coding_order(3)])

    def size(key: int) -> int:
        stream = codec.encode_samples(photo, planes, stats_key=key)
        assert np.array_equal(codec.decode_samples(photo, stream, *planes.shape[1:], stats_key=key), planes)
        return len(stream)

    sizes = {key: size(key) for key in tools.KEY_NAMES}
    assert sizes[tools.POSITION_KEY] < 0.985 * min(sizes[tools.LEVEL_KEY], sizes[tools.NO_KEY])
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:240, 0:320]
    level = 20 + 200 * (x / 319) * (0.6 + 0.4 * np.sin(y / 30))
    noisy = np.clip(np.round(level + rng.normal(0, 1, level.shape) * (0.3 + level / 40)), 0, 255).astype(np.uint8)
    assert set(photo_keys(coded(Image.fromarray(noisy)))) == {tools.LEVEL_KEY}
