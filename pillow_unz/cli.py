"""The `unz` command: compress, decompress, info, roundtrip and bench."""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, PngImagePlugin

from . import UnzImagePlugin, _coder, api, codec, format as fmt, png16, samples, tools  # (importing the plugin registers .unz)
from .weights import load_models, models_for


class CliError(Exception):
    """A failure the user can act on: printed as `unz: error: ...`, exit status 1."""


def _channels(mode: str) -> int:
    """Samples per pixel of a stored mode (RGB;16 ...) or a Pillow mode (I;16 ...)."""
    return sum(fmt.GROUPS[mode]) if mode in fmt.GROUPS else len(Image.getmodebands(mode))


def _bpsp(size_bytes: int, width: int, height: int, mode: str) -> float:
    return 8 * size_bytes / (width * height * _channels(mode))


def _check_target(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise CliError(f"{path} exists (use -f to overwrite)")


def _outputs(inputs: list[Path], output: str | None, suffix: str) -> list[Path]:
    """Where each input goes: beside it with `suffix`, or -o as a file (one input) or folder."""
    if output is None:
        return [p.with_suffix(suffix) for p in inputs]
    out = Path(output)
    if len(inputs) == 1 and not out.is_dir():
        return [out]
    if not out.is_dir():
        raise CliError(f"-o {out}: with several inputs, -o must be an existing folder")
    return [out / p.with_suffix(suffix).name for p in inputs]


def _for_each(items: list, work, desc: str) -> int:
    """work(*item) for every item, with a progress bar over several; a failure is reported and
    the rest still run. Exit status: 1 if any failed."""
    from tqdm import tqdm

    failures = 0
    for item in tqdm(items, desc=desc, unit="file", disable=len(items) < 2, file=sys.stderr):
        try:
            work(*item)
        except BrokenPipeError:  # the reader went away (unz info ... | head): no file failed
            raise
        except (OSError, ValueError, ImportError, CliError) as e:
            print(f"unz: error: {item[0]}: {e}", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


def _threads() -> int | None:
    return UnzImagePlugin._defaults.get("threads")


def cmd_compress(args: argparse.Namespace) -> int:
    def compress(src: Path, dst: Path) -> None:
        _check_target(dst, args.force)
        if png16.bit_depth(src) == 16:  # (Pillow reads 16-bit colour PNG as 8-bit)
            pixels, mode, metadata = png16.read(src)
            dst.write_bytes(api.compress(pixels, mode, **metadata, threads=_threads(), effort=args.effort))
        else:
            with Image.open(src) as img:
                img.save(dst, format="UNZ", save_all=True, effort=args.effort)  # every page or frame of the input
        with Image.open(dst) as coded:
            subpixels = sum(f.width * f.height * _channels(f.mode) for f in ImageSequence.Iterator(coded))
            frames = f", {coded.n_frames} frames" if coded.n_frames > 1 else ""
        size = dst.stat().st_size
        print(f"{src} -> {dst}: {size} bytes{frames}, {8 * size / subpixels:.3f} bits/subpixel")

    inputs = [Path(p) for p in args.inputs]
    return _for_each(list(zip(inputs, _outputs(inputs, args.output, ".unz"))), compress, "compress")


def cmd_decompress(args: argparse.Namespace) -> int:
    def decompress(src: Path, dst: Path) -> None:
        _check_target(dst, args.force)
        with open(src, "rb") as f:
            frames = fmt.index_frames(f, fmt.read_header(f)[0])  # chunk headers only
            if any(header.mode in UnzImagePlugin.PILLOW_MODES for header, _ in frames):
                # Pillow has no 16-bit colour modes: such files become 16-bit PNG files here
                if dst.suffix.lower() != ".png" or len(frames) > 1:
                    raise CliError("it holds 16-bit colour samples, which this writes to one .png file (one frame) only")
                f.seek(0)
                decoded = api.decompress(f, threads=_threads())
                dst.write_bytes(png16.encode(decoded.pixels, **decoded.info))
                print(f"{src} -> {dst}")
                return
        with Image.open(src, formats=["UNZ"]) as img:
            img.load()
            fmt_name = Image.registered_extensions().get(dst.suffix.lower())
            if img.n_frames > 1 and fmt_name not in Image.SAVE_ALL:
                raise CliError(f"it holds {img.n_frames} frames and {dst.suffix} stores one: write .tif, .png or .webp")
            img.save(dst, **_save_options(fmt_name, img.info), save_all=img.n_frames > 1)
        print(f"{src} -> {dst}")

    inputs = [Path(p) for p in args.inputs]
    return _for_each(list(zip(inputs, _outputs(inputs, args.output, ".png"))), decompress, "decompress")


def _save_options(format_name: str | None, info: dict) -> dict:
    """save()'s keywords that keep a decoded image as it is: its pixels exactly where the format
    can (WebP is lossy unless asked), its ICC profile, Exif and XMP (Pillow's PNG plugin takes
    XMP as an iTXt chunk only)."""
    keywords = {key: info[key] for key in ("icc_profile", "exif", "xmp") if info.get(key)}
    if format_name == "WEBP":
        keywords["lossless"] = True
    if format_name == "PNG" and "xmp" in keywords:
        keywords["pnginfo"] = PngImagePlugin.PngInfo()
        keywords["pnginfo"].add_itxt("XML:com.adobe.xmp", keywords["xmp"])
    return keywords


def _band_tools(g: codec.CodedPlanes, height: int) -> str:
    """How many bands each tool codes, say "bands: 3 learned photo (network 1, level key), 1 screen"."""
    def name(stream: bytes) -> str:
        if not stream:
            return "empty"
        tool = tools.NAMES.get(stream[0], f"tool {stream[0]}")
        if stream[0] not in tools.PHOTO_TOOLS:
            return tool
        try:
            way, _ = tools.photo_header(stream, g.revision)
        except ValueError:
            return f"{tool} (corrupt)"
        details = ([] if way.network is None else [f"network {way.network}"])
        details += [f"{tools.KEY_NAMES[way.key]} key"] if g.revision >= tools.KEYED_REVISION else []
        details += [f"fit memory {way.fit_memory}"] if g.revision >= tools.FIT_MEMORY_REVISION else []
        return f"{tool} ({', '.join(details)})" if details else tool

    counts = Counter(name(s) for s in codec.split_streams(g.pixels, _coder.num_bands(height, g.band_height)))
    return "bands: " + ", ".join(f"{n} {name}" for name, n in counts.items())


def _sample_transform(t: samples.SampleTransform | None) -> str:
    if isinstance(t, samples.Palette):
        return f", palette of {'/'.join(str(len(v)) for v in t.values)} values ({t.bits}-bit indices)"
    if isinstance(t, samples.SampleRange):
        return f", samples (x - {t.offset}) >> {t.shift} in {t.bits} bits, context shift {t.context_shift}"
    return ""


def cmd_info(args: argparse.Namespace) -> int:
    def info(name: str) -> None:
        with open(name, "rb") as f:
            unz = fmt.read(f)
        h = unz.header
        total = Path(name).stat().st_size
        frames = f", {1 + len(unz.frames)} frames" if unz.frames else ""
        print(f"{name}: UNZ version {h.version}, effort {h.effort}, {h.width}x{h.height} {h.mode}{frames}")
        models = models_for(h.model_id)
        known = ("unknown to this release" if models is None else
                 "this release's" if models is load_models() else "an earlier release's, kept")
        print(f"  model {h.model_id.hex()} ({known}), pixel hash {h.pixel_hash.hex()}")
        for key, value in unz.metadata.items():
            print(f"  {key}: {len(value)} bytes")
        if unz.adapter is not None:
            print(f"  adapter: {len(unz.adapter)} bytes")
            adapter = api.adapter_module()
            networks = [(models or load_models()).network(n) for n in fmt.GROUPS[h.mode]]
            for i, layers in enumerate(adapter.decode(unz.adapter, networks)):
                print(f"    planes {i}: " + (", ".join(f"{a.name} rank {a.rank}" for a in layers) or "not adapted"))
        if unz.repeats is not None:
            print(f"  repeats: coded {'x'.join(map(str, unz.repeats.shape[::-1]))}, the other rows and columns repeat")
        for i, g in enumerate(unz.groups):
            print(f"  planes {i}: {len(g.pixels)} bytes"
                  f" ({_band_tools(g, fmt.coded_shape(h, unz.repeats)[0])}){_sample_transform(g.samples)}")
        for i, frame in enumerate(unz.frames, 1):
            fh = frame.header
            print(f"  frame {i}: {fh.width}x{fh.height} {fh.mode}, {sum(g.size for g in frame.groups)} coded bytes")
        subpixels = sum(f.width * f.height * _channels(f.mode) for f in [h, *(frame.header for frame in unz.frames)])
        print(f"  {total} bytes, {8 * total / subpixels:.3f} bits/subpixel")

    return _for_each([(name,) for name in args.inputs], info, "info")


def cmd_roundtrip(args: argparse.Namespace) -> int:
    """Compress, decompress and compare, in memory: the README's first command."""
    import io

    def report(name: str, source: str, width: int, height: int, mode: str, size: int, times: list[float], same: bool) -> None:
        """times: before encoding, after it, after decoding."""
        print(
            f"{name}: {width}x{height} {mode}, {Path(name).stat().st_size} bytes as {source} -> {size} bytes as .unz, "
            f"{_bpsp(size, width, height, mode):.3f} bits/subpixel, "
            f"encode {times[1] - times[0]:.2f} s, decode {times[2] - times[1]:.2f} s: {'identical' if same else 'DIFFERENT'}"
        )
        if not same:
            raise CliError("decoded pixels differ")

    def roundtrip(name: str) -> None:
        if png16.bit_depth(name) == 16:  # (Pillow reads 16-bit colour PNG as 8-bit)
            return roundtrip_16(name)
        with Image.open(name) as img:
            img.load()
        buf = io.BytesIO()
        times = [time.perf_counter()]
        img.save(buf, format="UNZ")
        times.append(time.perf_counter())
        buf.seek(0)
        back = Image.open(buf)
        back.load()
        times.append(time.perf_counter())
        reference = UnzImagePlugin.storable(img)
        same = back.mode == reference.mode and np.array_equal(np.asarray(back), np.asarray(reference))
        report(name, img.format or "input", img.width, img.height, reference.mode, len(buf.getvalue()), times, same)

    def roundtrip_16(name: str) -> None:
        pixels, mode, _ = png16.read(name)
        times = [time.perf_counter()]
        data = api.compress(pixels, mode, threads=_threads())
        times.append(time.perf_counter())
        same = np.array_equal(api.decompress(data, threads=_threads()).pixels, pixels)
        times.append(time.perf_counter())
        report(name, "PNG", pixels.shape[1], pixels.shape[0], mode, len(data), times, same)

    return _for_each([(name,) for name in args.inputs], roundtrip, "roundtrip")


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    print(bench.run(args.folders, args.coder, args.json, args.repeat, args.ablation, args.memory))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unz", description="pillow-unz: learned lossless image compression")
    p.add_argument("--threads", type=int, help="threads to code bands on (default: all; files never depend on it)")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compress", help="images to .unz")
    c.add_argument("inputs", nargs="+")
    c.add_argument("-o", "--output", help="output file (one input) or existing folder")
    c.add_argument("-f", "--force", action="store_true", help="overwrite existing files")
    c.add_argument("-e", "--effort", type=int, default=tools.DEFAULT_EFFORT, choices=range(1, 10), metavar="1-9",
                   help=f"1 fastest to 9 smallest, as cjxl -e (default {tools.DEFAULT_EFFORT}); decoding needs no option")
    c.set_defaults(func=cmd_compress)
    d = sub.add_parser("decompress", help=".unz to PNG (or the format -o names)")
    d.add_argument("inputs", nargs="+")
    d.add_argument("-o", "--output", help="output file (one input) or existing folder")
    d.add_argument("-f", "--force", action="store_true", help="overwrite existing files")
    d.set_defaults(func=cmd_decompress)
    i = sub.add_parser("info", help="header and section sizes of .unz files")
    i.add_argument("inputs", nargs="+")
    i.set_defaults(func=cmd_info)
    r = sub.add_parser("roundtrip", help="compress and decompress in memory, report size and identity")
    r.add_argument("inputs", nargs="+")
    r.set_defaults(func=cmd_roundtrip)
    b = sub.add_parser("bench", help="compare with PNG, WebP, JPEG XL, JPEG-LS; time the range coder")
    b.add_argument("folders", nargs="*", help="folders of .png images, each reported on its own (photos, screen content)")
    b.add_argument("--coder", action="store_true", help="only the range-coder benchmark")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    b.add_argument("--ablation", action="store_true",
                   help="the network's share: code every image as usual and with its outputs replaced by constants")
    b.add_argument("--repeat", type=int, default=1, help="time each codec this many times, keep the best")
    b.add_argument("--memory", nargs="*", metavar="PNG",
                   help="peak memory and speed of save and load, each in a process of its own, for these PNGs and a generated 24 MP photo")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.threads is not None:
            UnzImagePlugin.register_unz_opener(threads=args.threads)
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # As a Unix tool does on SIGPIPE: stop quietly, and keep Python from complaining again
        # when it flushes stdout at exit (the Python docs' recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (OSError, ValueError, ImportError, CliError) as e:
        print(f"unz: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
