"""Per-image LoRA adapters: tuned files decode exactly (here and in other processes), and
corrupted adapter chunks raise Python exceptions."""
from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from pillow_unz import adapter, api, codec, format as fmt, tools
from pillow_unz.weights import load_models

from .conftest import with_alpha

lora = pytest.importorskip("pillow_unz.finetune.lora", reason="the lora extra (PEFT) is not installed")


def adapted_file(img: Image.Image, steps: int = 3, device: str = "cpu") -> tuple[bytes, list[adapter.Adapter]]:
    """img coded with adapters tuned for a few steps on `device`, stored whether or not they pay
    for themselves (lora.compress would drop them on so small an image)."""
    models = load_models()
    header, groups = api.prepare(np.asarray(img), img.mode, models)
    settings = lora.LoraSettings(steps=steps, device=device)
    photos = [models.for_channels(len(g)) for g in groups]
    tuned = [lora.tune(models.network(len(g)), p.scale_table, g, settings)[0] for g, p in zip(groups, photos)]
    coded = [
        codec.encode_planes(replace(p, network=adapter.apply(models.network(len(g)), a)), g)
        for g, p, a in zip(groups, photos, tuned)
    ]
    return fmt.to_bytes(fmt.UnzFile(header, {}, adapter.encode(tuned), coded)), tuned


@pytest.fixture(scope="module")
def rgba_adapted(small: Image.Image) -> tuple[Image.Image, bytes, list[adapter.Adapter]]:
    img = with_alpha(small)
    return (img, *adapted_file(img))


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img)


def test_adapted_file_decodes_exactly(rgba_adapted) -> None:
    img, data, tuned = rgba_adapted
    assert all(tuned), "a few steps of training should change both groups' models"
    assert {layer.name for a in tuned for layer in a} <= set(lora.DEFAULT_TARGETS)
    assert np.array_equal(decoded(data), np.asarray(img))
    # the adapter really is applied: the same streams under the plain model cannot decode
    unz = fmt.read(io.BytesIO(data))
    unz.adapter = None
    with pytest.raises(ValueError):
        decoded(fmt.to_bytes(unz))


def test_adapter_chunk_roundtrip(rgba_adapted) -> None:
    _, data, tuned = rgba_adapted
    networks = [load_models().network(n) for n in fmt.GROUPS["RGBA"]]
    back = adapter.decode(fmt.read(io.BytesIO(data)).adapter, networks)
    for a, b in zip(tuned, back):
        assert [layer.name for layer in a] == [layer.name for layer in b]
        for la, lb in zip(a, b):
            for fa, fb in zip(la.factors(), lb.factors()):
                assert np.array_equal(fa, fb)


DECODE = """
import sys, hashlib, torch
threads = int(sys.argv[1])
torch.set_num_threads(threads)
torch.backends.mkldnn.enabled = threads != 3  # the network's exact path, with and without oneDNN
import numpy as np
from PIL import Image
import pillow_unz
pillow_unz.register_unz_opener(threads=threads)  # and the coder's threads
with Image.open(sys.argv[2]) as img:
    print(hashlib.sha256(np.asarray(img).tobytes()).hexdigest())
"""


@pytest.mark.parametrize("threads", [1, 3])
def test_adapted_file_decodes_in_other_process(rgba_adapted, tmp_path, threads: int) -> None:
    import hashlib

    img, data, _ = rgba_adapted
    path = tmp_path / "adapted.unz"
    path.write_bytes(data)
    result = subprocess.run([sys.executable, "-c", DECODE, str(threads), str(path)], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == hashlib.sha256(np.asarray(img).tobytes()).hexdigest()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_adapter_tuned_on_cuda_decodes_on_cpu(small: Image.Image, tmp_path) -> None:
    """Tuning on a GPU changes the adapter, never the decoding: the file decodes exactly here
    and in a process that never touches CUDA."""
    import hashlib

    data, tuned = adapted_file(small, steps=20, device="cuda")
    assert any(tuned)
    assert np.array_equal(decoded(data), np.asarray(small))
    assert all(p.device.type == "cpu" for p in load_models().network(3).parameters())
    path = tmp_path / "cuda.unz"
    path.write_bytes(data)
    result = subprocess.run([sys.executable, "-c", DECODE, "1", str(path)], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == hashlib.sha256(np.asarray(small).tobytes()).hexdigest()


WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None  # as if torch were not installed: any import of it fails
import numpy as np
from PIL import Image
import pillow_unz
with Image.open(sys.argv[1]) as img:
    pixels = np.asarray(img)
    Image.fromarray(pixels[..., :3]).save(sys.argv[2])
with Image.open(sys.argv[2]) as img:
    assert np.array_equal(np.asarray(img), pixels[..., :3])
try:
    Image.open(sys.argv[3]).load()
except ImportError as e:
    print(e)
"""


def test_only_adapted_files_need_torch(rgba_adapted, tmp_path) -> None:
    """Plain files code and decode without torch; a file with an adapter says what it needs."""
    img, data, _ = rgba_adapted
    plain, adapted = tmp_path / "plain.unz", tmp_path / "adapted.unz"
    img.save(plain)
    adapted.write_bytes(data)
    args = [sys.executable, "-c", WITHOUT_TORCH, str(plain), str(tmp_path / "again.unz"), str(adapted)]
    result = subprocess.run(args, capture_output=True, text=True, check=True)
    assert "pip install 'pillow-unz[network]'" in result.stdout


def test_save_with_lora(small: Image.Image) -> None:
    gray = small.convert("L")
    for img in (small, gray):
        buf = io.BytesIO()
        img.save(buf, format="UNZ", lora=True, steps=2, rank=2)
        assert np.array_equal(decoded(buf.getvalue()), np.asarray(img))
    # an adapter only goes into the file when it pays for itself
    result = lora.compress(np.asarray(gray), "L", settings=lora.LoraSettings(steps=2))
    (group,) = result.groups
    stored = fmt.read(io.BytesIO(result.data)).adapter is not None
    assert stored == group.kept
    assert np.array_equal(decoded(result.data), np.asarray(gray))
    plain = api.compress(np.asarray(gray), "L", effort=lora.DEFAULT_EFFORT)  # the effort lora.compress codes at
    assert len(result.data) < len(plain) if group.kept else result.data == plain


def test_lora_tunes_what_is_coded(small: Image.Image) -> None:
    """Of an enlargement, the adapter is tuned on the picture that is coded (RPTS)."""
    big = np.repeat(np.repeat(np.asarray(small.convert("L")), 2, axis=0), 2, axis=1)
    result = lora.compress(big, "L", settings=lora.LoraSettings(steps=2))
    assert fmt.read(io.BytesIO(result.data)).repeats.shape == (small.height, small.width)
    assert np.array_equal(decoded(result.data), big)
    plain = api.compress(big, "L", effort=lora.DEFAULT_EFFORT)
    assert np.array_equal(decoded(plain), big)
    assert len(result.data) < len(plain) if result.groups[0].kept else result.data == plain


def test_bad_settings_are_refused(small: Image.Image) -> None:
    with pytest.raises(ValueError, match="targets"):
        small.save(io.BytesIO(), format="UNZ", lora=True, steps=1, targets=("stem",))
    with pytest.raises(ValueError, match="rank"):
        small.save(io.BytesIO(), format="UNZ", lora=True, steps=1, rank=0)
    with pytest.raises(ValueError, match="negative"):
        small.save(io.BytesIO(), format="UNZ", lora=True, steps=-1)
    with pytest.raises(ValueError, match="device"):
        small.save(io.BytesIO(), format="UNZ", lora=True, steps=1, device="no-such-device")


def test_finetune_command(small: Image.Image, tmp_path) -> None:
    from pillow_unz.finetune import cli

    src = tmp_path / "small.png"
    small.save(src)
    assert cli.main(["--lora", str(src), "--steps", "2"]) == 0
    assert np.array_equal(decoded((tmp_path / "small.unz").read_bytes()), np.asarray(small))
    assert cli.main(["--lora", str(src), "--steps", "2"]) == 1  # exists: needs -f
    assert cli.main(["--lora", str(src), "--seconds", "0.5", "-f", "-o", str(tmp_path / "t.unz")]) == 0
    assert np.array_equal(decoded((tmp_path / "t.unz").read_bytes()), np.asarray(small))


def test_bench_command_decodes_what_it_writes(small: Image.Image, tmp_path, capsys) -> None:
    """--bench codes the folder and decodes every file in another process (exit 0: all identical)."""
    from pillow_unz.finetune import cli

    small.save(tmp_path / "small.png")
    assert cli.main(["--bench", str(tmp_path), "--steps", "1,2"]) == 0
    out = capsys.readouterr().out
    assert out.count(" identical") == 2 and "DIFFERENT" not in out


def with_adapter_payload(data: bytes, payload: bytes) -> bytes:
    """data with its ADPT chunk's payload replaced (and a valid CRC, so the adapter parser is tested)."""
    start = data.index(b"ADPT")
    (length,) = struct.unpack("<I", data[start + 4 : start + 8])
    chunk = b"ADPT" + struct.pack("<I", len(payload)) + payload + struct.pack("<I", zlib.crc32(b"ADPT" + payload))
    return data[:start] + chunk + data[start + 8 + length + 4 :]


def test_corrupt_adapter_chunks_raise(rgba_adapted) -> None:
    _, data, tuned = rgba_adapted
    payload = fmt.read(io.BytesIO(data)).adapter
    name = tuned[0][0].name.encode()
    hostile = {
        "truncated": payload[: len(payload) // 2],
        "empty": b"",
        "unknown layer": payload.replace(name, b"x" * len(name), 1),
        "encoder layer": b"\x01\x04stem\x01\x00\x00\x00\x00",
        "rank too big": bytes([1, len(name)]) + name + bytes([200]) + payload[3 + len(name) :],
        "scale out of range": bytes([1, len(name)]) + name + bytes([payload[2 + len(name)], 255]) + payload[4 + len(name) :],
        "trailing bytes": bytes(len(fmt.GROUPS["RGBA"])) + b"junk",
    }
    for what, bad in hostile.items():
        with pytest.raises(ValueError):
            decoded(with_adapter_payload(data, bad))
    # flipped bits inside the coded factors: an exception, never wrong pixels
    rng = np.random.default_rng(0)
    for _ in range(50):
        bad = bytearray(payload)
        pos = int(rng.integers(len(payload) // 2, len(payload)))
        bad[pos] ^= 1 << int(rng.integers(8))
        try:
            pixels = decoded(with_adapter_payload(data, bytes(bad)))
        except ValueError:
            continue
        assert np.array_equal(pixels, np.asarray(rgba_adapted[0]))  # the flip changed nothing that mattered


def test_same_image_same_file(small: Image.Image) -> None:
    gray = np.asarray(small.convert("L"))
    settings = lora.LoraSettings(steps=2)
    first = lora.compress(gray, "L", settings=settings).data
    torch.rand(3)  # torch's global generator moves on; the adapter's initialisation must not
    assert lora.compress(gray, "L", settings=settings).data == first
    assert np.array_equal(decoded(first), gray)


def test_bound_starts_from_the_codec(small: Image.Image) -> None:
    """The bound measures with the coder itself: untuned, its size is the codec's pixel stream
    with the classical pixel model and no statistics key (the pixel model that training
    computes), which the photo tool codes as its header (its tool byte, its key and its fit
    memory) and that stream."""
    from pillow_unz.finetune import bound

    photo = load_models().for_channels(3)
    planes = np.ascontiguousarray(np.asarray(small).transpose(2, 0, 1))
    base, tuned = bound.bound(photo, planes, block=8, steps=0)
    coded = codec.encode_planes(photo, planes, effort=3)  # one band: the photo tool, the level key
    assert np.array_equal(codec.decode_planes(photo, coded, small.height, small.width), planes)
    ordered = np.ascontiguousarray(planes[codec.coding_order(3)])
    header = tools.photo_prefix(tools.Way(None, tools.LEVEL_KEY))
    assert coded.pixels == header + codec.encode_samples(photo, ordered, stats_key=tools.LEVEL_KEY)
    unkeyed = codec.encode_samples(photo, ordered)
    assert np.array_equal(codec.decode_samples(photo, unkeyed, small.height, small.width), ordered)
    assert base == tuned == len(unkeyed)
