"""`unz bench`: bits per subpixel and speed of pillow-unz against the classical lossless codecs,
and of the range coder against constriction. Every codec's output is decoded and compared."""
from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from . import _coder, api, codec, png16, samples, tools
from .UnzImagePlugin import PILLOW_MODES
from .codec import PhotoModel, coding_order

# pillow-unz's efforts in the table: the classical pixel model, the default (named "pillow-unz"),
# the strongest.
BENCH_EFFORTS = (3, tools.DEFAULT_EFFORT, 9)


@dataclass
class Codec:
    name: str
    encode: Callable[[np.ndarray, str], bytes]
    decode: Callable[[bytes, str], np.ndarray]  # (data, mode of the original)
    wide: bool = True  # codes 16-bit samples too


@dataclass
class Tally:
    bits: int = 0
    samples: int = 0
    pixels: int = 0
    encode_s: float = 0.0
    decode_s: float = 0.0
    images: list = field(default_factory=list)

    def row(self) -> dict:
        return {
            "bpsp": round(self.bits / self.samples, 4),
            "encode_mps": round(self.pixels / self.encode_s / 1e6, 3),
            "decode_mps": round(self.pixels / self.decode_s / 1e6, 3),
            "images": len(self.images),
        }


def _pillow_codec(name: str, fmt: str, **options) -> Codec:
    def encode(pixels: np.ndarray, mode: str) -> bytes:
        buf = io.BytesIO()
        (Image.fromarray(pixels) if mode == "I;16" else Image.fromarray(pixels, mode)).save(buf, format=fmt, **options)
        return buf.getvalue()

    def decode(data: bytes, mode: str) -> np.ndarray:
        # WebP has no grayscale: it stores L as RGB with equal channels, so take one back.
        return np.asarray(Image.open(io.BytesIO(data)).convert(mode))

    return Codec(name, encode, decode, wide=False)


def read_image(path: Path) -> tuple[np.ndarray, str]:
    """A PNG file's pixels and mode, 16-bit samples kept (png16: Pillow reads 16-bit colour as
    8-bit)."""
    if png16.bit_depth(path) == 16:
        return png16.read(path)[:2]
    with Image.open(path) as img:
        img.load()
        return np.asarray(img), img.mode


def _png_codec() -> Codec:
    """PNG at zlib's strongest: Pillow's optimize, and png16 for 16-bit colour, which Pillow
    does not write."""
    pillow = _pillow_codec("PNG (optimize)", "PNG", optimize=True)

    def encode(pixels: np.ndarray, mode: str) -> bytes:
        return png16.encode(pixels) if mode in PILLOW_MODES else pillow.encode(pixels, mode)

    def decode(data: bytes, mode: str) -> np.ndarray:
        return png16.decode(data)[0] if mode in PILLOW_MODES else pillow.decode(data, mode)

    return Codec(pillow.name, encode, decode)


def available_codecs() -> list[Codec]:
    codecs = [
        Codec("pillow-unz" if effort == tools.DEFAULT_EFFORT else f"pillow-unz e{effort}",
              lambda p, m, e=effort: api.compress(p, m, effort=e), lambda d, m: api.decompress(d).pixels)
        for effort in BENCH_EFFORTS
    ] + [
        _png_codec(),
        _pillow_codec("WebP lossless m6", "WEBP", lossless=True, method=6, quality=100, exact=True),
    ]
    try:
        import imagecodecs as ic
    except ImportError:  # the `bench` extra is not installed
        return codecs
    if ic.JPEGXL.available:
        for effort in (7, 9):
            # on as many threads as pillow-unz codes on (imagecodecs' default is one)
            codecs.append(Codec(f"JPEG XL e{effort}",
                                lambda p, m, e=effort: ic.jpegxl_encode(p, lossless=True, effort=e, numthreads=codec.thread_count()),
                                lambda d, m: ic.jpegxl_decode(d, numthreads=codec.thread_count())))
    if ic.JPEGLS.available:
        codecs.append(Codec("JPEG-LS", lambda p, m: ic.jpegls_encode(p, level=0), lambda d, m: ic.jpegls_decode(d)))
    return codecs


def _timed(fn, *args, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t)
    return out, best


def bench_images(folder: str | Path, repeat: int = 1, progress: bool = True) -> dict:
    """Over the PNG images of folder: {"codecs": {codec: {group: row}}, groups 'all' and each
    mode; "files": {file: {codec: bytes}}}."""
    from tqdm import tqdm

    files = sorted(Path(folder).glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no .png images in {folder}")
    codecs = available_codecs()
    api.compress(np.zeros((8, 8, 3), np.uint8), "RGB")  # load the models before timing
    results: dict[str, dict[str, Tally]] = {c.name: {} for c in codecs}
    sizes: dict[str, dict[str, int]] = {}
    for f in tqdm(files, desc="bench", disable=not progress):
        pixels, mode = read_image(f)
        height, width = pixels.shape[:2]
        for c in codecs:
            if pixels.dtype == np.uint16 and not c.wide:
                continue
            data, enc_s = _timed(c.encode, pixels, mode, repeat=repeat)
            decoded, dec_s = _timed(c.decode, data, mode, repeat=repeat)
            if not np.array_equal(np.asarray(decoded).reshape(pixels.shape), pixels):
                raise AssertionError(f"{c.name} did not round-trip {f.name}")
            sizes.setdefault(f.name, {})[c.name] = len(data)
            for group in ("all", mode):
                t = results[c.name].setdefault(group, Tally())
                t.bits += 8 * len(data)
                t.samples += pixels.size
                t.pixels += width * height
                t.encode_s += enc_s
                t.decode_s += dec_s
                t.images.append(f.name)
    return {"codecs": {name: {g: t.row() for g, t in groups.items()} for name, groups in results.items()}, "files": sizes}


def fit_constants(photo: PhotoModel, groups: list[np.ndarray], stats_key: int = tools.NO_KEY) -> tuple[np.ndarray, int]:
    """The best constant parameters of the photo tool for these plane groups (8-bit, in coding
    order), by real coded bytes (with that statistics key): from photo.constants, a coordinate
    search over integers (steps of one scale step for offsets, 2/64 for coefficients) that keeps
    every move that saves bytes."""

    def cost(constants: np.ndarray) -> int:
        trial = replace(photo, constants=constants, network=None)
        return sum(len(codec.encode_samples(trial, g, stats_key=stats_key)) for g in groups)

    best = photo.constants.astype(np.int32)
    best_cost = cost(best)
    for i in range(len(best)):
        step = 1 if i < photo.channels else 2
        for direction in (1, -1):
            while True:
                trial = best.copy()
                trial[i] += direction * step
                trial_cost = cost(trial)
                if trial_cost >= best_cost:
                    break
                best, best_cost = trial, trial_cost
    return best, best_cost


def bench_ablation(folder: str | Path, progress: bool = True) -> dict:
    """The context networks' share on the PNG images of folder: the photo tool codes every plane
    group with the networks of the default effort (each band the smallest of them, every way
    coded to the end), with effort 9's, and without a network under the best constant parameters
    fitted on the same images by coded size (the network's outputs replaced by constants: a
    constant mean correction is what the bias cancellation already gives); network_share =
    1 - network bytes / constant bytes. Both sides try the statistics keys and fit memories of
    their effort (the default's for the constants). The shipped constants' bytes without a
    network are reported beside them. The streams kept are decoded and compared."""
    from tqdm import tqdm

    from .weights import load_models

    files = sorted(Path(folder).glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no .png images in {folder}")
    models = load_models()
    by_model: dict[int, list[np.ndarray]] = {}
    for f in files:
        img = Image.open(f)
        for planes in api.prepare(np.asarray(img), img.mode, models)[1]:
            by_model.setdefault(len(planes), []).append(np.ascontiguousarray(planes[coding_order(len(planes))]))

    def coded_bytes(photo: PhotoModel, groups: list[np.ndarray], networks: tuple[int | None, ...], effort: int,
                    what: str) -> int:
        """Bytes of the groups' photo streams, each band the smallest of its codings with every
        one of `networks` and the statistics keys and fit memories of `effort`, as the encoder
        tries them but every way coded to the end; decoded and compared."""
        codings = replace(tools.EFFORTS[effort], photo=networks).codings
        total = 0
        for g in tqdm(groups, desc=what, disable=not progress):
            height, width = g.shape[1:]
            band_height = tools.band_height(height)
            bands = list(range(_coder.num_bands(height, band_height)))
            streams = codec.photo_streams(photo, g, samples.Unchanged(), bands, codings, band_height, race_rows=0)
            coded = codec.CodedPlanes(codec.join_streams([streams[b] for b in bands]), band_height=band_height)
            if not np.array_equal(codec.decode_planes(photo, coded, height, width), g[np.argsort(coding_order(len(g)))]):
                raise AssertionError("the photo tool did not round-trip")
            total += coded.size
        return total

    result: dict = {"images": len(files), "models": {}}
    for channels, groups in by_model.items():
        shipped = models.for_channels(channels)
        if not shipped.context_networks:
            raise ValueError(f"the {channels}-channel model has no context network to ablate")
        default_effort = tools.DEFAULT_EFFORT
        default = coded_bytes(shipped, groups, tools.EFFORTS[default_effort].networks, default_effort, "default networks")
        strongest = coded_bytes(shipped, groups, tools.EFFORTS[9].networks, 9, "effort 9's networks")
        constants, _ = fit_constants(shipped, groups, tools.EFFORTS[default_effort].keys[0])
        fitted = coded_bytes(replace(shipped, constants=constants), groups, (None,), default_effort, "constants")
        result["models"][channels] = {
            "network_bytes": default, "strongest_network_bytes": strongest, "constant_bytes": fitted,
            "shipped_bytes": coded_bytes(shipped, groups, (None,), default_effort, "shipped constants"),
            "network_share": round(1 - default / fitted, 5), "strongest_share": round(1 - strongest / fitted, 5),
            "constants": constants.tolist()}
    for key in ("network_bytes", "strongest_network_bytes", "constant_bytes", "shipped_bytes"):
        result[key] = sum(m[key] for m in result["models"].values())
    result["network_share"] = round(1 - result["network_bytes"] / result["constant_bytes"], 5)
    result["strongest_share"] = round(1 - result["strongest_network_bytes"] / result["constant_bytes"], 5)
    return result


def format_ablation(result: dict) -> str:
    lines = [f"ablation over {result['images']} images: the photo tool with the context networks of the default "
             "effort and of effort 9, and without one under the best constants fitted on them",
             f"{'model':<10} {'network bytes':>14} {'constant bytes':>15} {'network share':>14} "
             f"{'e9 network':>12} {'e9 share':>9} {'shipped bytes':>14}"]
    names = {1: "gray", 3: "colour"}
    for key, m in [*((names.get(int(c), c), m) for c, m in result["models"].items()), ("all", result)]:
        lines.append(f"{key:<10} {m['network_bytes']:>14,} {m['constant_bytes']:>15,} {m['network_share']:>13.2%} "
                     f"{m['strongest_network_bytes']:>12,} {m['strongest_share']:>8.2%} {m['shipped_bytes']:>14,}")
    return "\n".join(lines)


def bench_coder(n: int = 1_000_000, seed: int = 0) -> dict:
    """Msymbols/s of pillow_unz.coder and constriction's range coder, one 256-entry table."""
    from . import coder

    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(256, 0.5))
    freqs = np.maximum(1, np.floor(probs * (2**16 - 256)).astype(np.int64))
    freqs[np.argmax(freqs)] += 2**16 - freqs.sum()
    cdf = np.concatenate([[0], np.cumsum(freqs)]).astype(np.int32)[None]
    symbols = rng.choice(256, size=n, p=freqs / 2**16).astype(np.int32)
    indexes = np.zeros(n, np.int32)
    data, enc = _timed(coder.encode_cdf, cdf, symbols, indexes, repeat=3)
    out, dec = _timed(coder.decode_cdf, cdf, data, indexes, repeat=3)
    assert np.array_equal(out, symbols)
    result = {"symbols": n, "pillow-unz": {"encode_msym_s": n / enc / 1e6, "decode_msym_s": n / dec / 1e6, "bytes": len(data)}}
    try:
        import constriction
    except ImportError:
        return result
    model = constriction.stream.model.Categorical(freqs / 2**16, perfect=False)

    def c_encode():
        e = constriction.stream.queue.RangeEncoder()
        e.encode(symbols, model)
        return e.get_compressed()

    words, enc = _timed(c_encode, repeat=3)
    decoded, dec = _timed(lambda: constriction.stream.queue.RangeDecoder(words).decode(model, n), repeat=3)
    assert np.array_equal(decoded, symbols)
    result["constriction"] = {"encode_msym_s": n / enc / 1e6, "decode_msym_s": n / dec / 1e6, "bytes": 4 * len(words)}
    return result


def format_images(folder: str, result: dict) -> str:
    results, sizes = result["codecs"], result["files"]
    groups = sorted({g for rows in results.values() for g in rows}, key=lambda g: (g != "all", g))
    lines = [f"== {folder} =="]
    for g in groups:
        lines.append(f"\n{g}: bits per subpixel, encode and decode megapixels per second")
        lines.append(f"{'codec':<20} {'bpsp':>7} {'enc MP/s':>9} {'dec MP/s':>9}")
        for name, rows in results.items():
            if g in rows:
                r = rows[g]
                lines.append(f"{name:<20} {r['bpsp']:>7.3f} {r['encode_mps']:>9.3f} {r['decode_mps']:>9.3f}")
    ratio = {f: s["pillow-unz"] / s["PNG (optimize)"] for f, s in sizes.items()}
    worst = max(ratio, key=ratio.get)
    lines.append(f"\npillow-unz / PNG (optimize), per file: largest {ratio[worst]:.3f} ({worst}), "
                 f"{sum(r > 1 for r in ratio.values())} of {len(ratio)} files larger than PNG")
    return "\n".join(lines)


def format_coder(result: dict) -> str:
    lines = [f"range coder, {result['symbols']} symbols, one 256-entry table", f"{'coder':<14} {'enc Msym/s':>11} {'dec Msym/s':>11} {'bytes':>9}"]
    for name in ("pillow-unz", "constriction"):
        if name in result:
            r = result[name]
            lines.append(f"{name:<14} {r['encode_msym_s']:>11.1f} {r['decode_msym_s']:>11.1f} {r['bytes']:>9}")
    return "\n".join(lines)


# One step of the memory benchmark, alone in a fresh process, so that its peak resident memory
# (ru_maxrss) is that step's, as a user's program would see it.
_MEMORY_STEP = """
import json, resource, sys, time
from PIL import Image
import pillow_unz
from pillow_unz.codec import thread_count  # JPEG XL on as many threads as pillow-unz
step, src, dst = sys.argv[1:4]
seconds = 0.0
if step == "encode":
    with Image.open(src) as img:
        img.load()
        t = time.perf_counter()
        img.save(dst, format="UNZ")
        seconds = time.perf_counter() - t
elif step == "decode":
    t = time.perf_counter()
    with Image.open(dst) as img:
        img.load()
    seconds = time.perf_counter() - t
elif step == "jxl-encode":  # JPEG XL effort 7, as `unz bench` runs it
    import imagecodecs, numpy
    with Image.open(src) as img:
        pixels = numpy.asarray(img)
    t = time.perf_counter()
    data = imagecodecs.jpegxl_encode(pixels, lossless=True, effort=7, numthreads=thread_count())
    seconds = time.perf_counter() - t
    open(dst, "wb").write(data)
elif step == "jxl-decode":
    import imagecodecs
    data = open(dst, "rb").read()
    t = time.perf_counter()
    imagecodecs.jpegxl_decode(data, numthreads=thread_count())
    seconds = time.perf_counter() - t
try:  # Linux: the peak of this program's own memory (ru_maxrss may count the parent's, by vfork)
    peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
except OSError:
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1)
print(json.dumps({"seconds": seconds, "peak_mb": peak_kb / 1024}))
"""


def generated_photo(path: Path, width: int = 6000, height: int = 4000, seed: int = 0) -> Path:
    """A large photo-like RGB test image (smooth shapes, texture and sensor-like noise) as PNG."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width].astype(np.float32) / max(width, height)
    image = np.empty((height, width, 3), np.uint8)
    for c in range(3):
        field = 128 + 60 * np.sin(7 * x + 3 * c) * np.cos(5 * y - c) + 30 * np.sin(40 * (x + y) * (1 + c / 3))
        image[..., c] = np.clip(field + rng.normal(0, 3, field.shape), 0, 255)
    Image.fromarray(image).save(path, compress_level=1)
    return path


def bench_memory(files: list[str], generated: tuple[int, int] = (6000, 4000), progress: bool = True) -> list[dict]:
    """Peak resident memory and speed of encoding (img.save) and decoding (Image.open + load)
    each PNG, and a generated photo of `generated` (width, height), each step in a process of
    its own; and, where imagecodecs is installed, JPEG XL effort 7's (numpy in and out)."""
    from tqdm import tqdm

    jxl = importlib.util.find_spec("imagecodecs") is not None

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        width, height = generated
        paths = [Path(f) for f in files] + [generated_photo(Path(tmp) / f"generated-{width}x{height}.png", width, height)]
        floor = _memory_step("import", "", "")["peak_mb"]
        for path in tqdm(paths, desc="memory", disable=not progress):
            with Image.open(path) as img:
                megapixels, raw_mb = img.width * img.height / 1e6, img.width * img.height * len(img.getbands()) / 2**20
            coded = Path(tmp) / "coded.unz"
            encode, decode = (_memory_step(step, str(path), str(coded)) for step in ("encode", "decode"))
            row = {"file": path.name, "megapixels": round(megapixels, 2), "raw_mb": round(raw_mb, 1),
                   "bytes": coded.stat().st_size, "process_floor_mb": round(floor)}
            steps = {"encode": encode, "decode": decode}
            if jxl:
                coded = Path(tmp) / "coded.jxl"
                steps.update({step: _memory_step(step, str(path), str(coded)) for step in ("jxl-encode", "jxl-decode")})
                row["jxl_bytes"] = coded.stat().st_size
            for step, m in steps.items():
                key = step.replace("-", "_")
                row.update({f"{key}_s": round(m["seconds"], 2), f"{key}_mps": round(megapixels / m["seconds"], 3),
                            f"{key}_peak_mb": round(m["peak_mb"])})
            rows.append(row)
    return rows


def _memory_step(step: str, src: str, dst: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _MEMORY_STEP, step, src, dst], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"memory benchmark, {step} of {src}: {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout)


def format_memory(rows: list[dict]) -> str:
    lines = [f"peak resident memory of a whole process (after import pillow_unz alone: {rows[0]['process_floor_mb']} MB)",
             f"{'file':<28} {'codec':<11} {'MP':>5} {'raw MB':>6} {'bytes':>11} {'enc s':>6} {'enc MP/s':>8} {'enc MB':>7} "
             f"{'dec s':>6} {'dec MP/s':>8} {'dec MB':>7}"]
    for r in rows:
        for codec_name, key, size in (("pillow-unz", "", r["bytes"]), ("JPEG XL e7", "jxl_", r.get("jxl_bytes"))):
            if size is None:
                continue
            lines.append(f"{r['file'][:28]:<28} {codec_name:<11} {r['megapixels']:>5.1f} {r['raw_mb']:>6.0f} {size:>11,} "
                         f"{r[key + 'encode_s']:>6.1f} {r[key + 'encode_mps']:>8.2f} {r[key + 'encode_peak_mb']:>7} "
                         f"{r[key + 'decode_s']:>6.1f} {r[key + 'decode_mps']:>8.2f} {r[key + 'decode_peak_mb']:>7}")
    return "\n".join(lines)


def run(folders: list[str], coder_only: bool, as_json: bool, repeat: int, ablation: bool = False,
        memory: list[str] | None = None) -> str:
    """Each folder is measured and reported on its own (photographs and screen content, say)."""
    if memory is not None:
        rows = bench_memory(memory, progress=not as_json)
        return json.dumps(rows, indent=1) if as_json else format_memory(rows)
    if ablation:
        if len(folders) != 1:
            raise ValueError("--ablation needs one folder of images")
        result = bench_ablation(folders[0], progress=not as_json)
        return json.dumps(result, indent=1) if as_json else format_ablation(result)
    out = {}
    if folders and not coder_only:
        out["images"] = {folder: bench_images(folder, repeat, progress=not as_json) for folder in folders}
    out["coder"] = bench_coder()
    if as_json:
        return json.dumps(out, indent=1)
    parts = [format_images(folder, result) for folder, result in out.get("images", {}).items()]
    parts.append(format_coder(out["coder"]))
    return "\n\n".join(parts)
