"""imageio v3 and the `unz` command line."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pillow_unz import cli

from .conftest import with_alpha


def test_imageio_v3(small: Image.Image, tmp_path) -> None:
    iio = pytest.importorskip("imageio.v3")
    for img in (small, small.convert("L"), with_alpha(small)):
        path = tmp_path / f"{img.mode}.unz"
        pixels = np.asarray(img)
        iio.imwrite(path, pixels)
        assert np.array_equal(iio.imread(path), pixels)


def test_compress_decompress_info(small: Image.Image, tmp_path, capsys) -> None:
    src = tmp_path / "a.png"
    small.save(src)
    second = tmp_path / "b.png"
    small.convert("L").save(second)
    assert cli.main(["compress", str(src), str(second)]) == 0
    assert "bits/subpixel" in capsys.readouterr().out
    assert cli.main(["compress", str(src)]) == 1  # exists
    assert "exists" in capsys.readouterr().err
    assert cli.main(["info", str(tmp_path / "a.unz")]) == 0
    out = capsys.readouterr().out
    assert "64x48 RGB" in out and "bits/subpixel" in out
    small.save(tmp_path / "four.unz", effort=4)  # one band, the small context network's
    assert np.array_equal(np.asarray(Image.open(tmp_path / "four.unz")), np.asarray(small))
    assert cli.main(["info", str(tmp_path / "four.unz")]) == 0
    assert "bands: 1 learned photo (network 0, level key, fit memory 9)" in capsys.readouterr().out
    target = tmp_path / "back.png"
    assert cli.main(["decompress", str(tmp_path / "a.unz"), "-o", str(target)]) == 0
    assert np.array_equal(np.asarray(Image.open(target)), np.asarray(small))
    outdir = tmp_path / "out"
    outdir.mkdir()
    assert cli.main(["decompress", str(tmp_path / "a.unz"), str(tmp_path / "b.unz"), "-o", str(outdir)]) == 0
    assert np.array_equal(np.asarray(Image.open(outdir / "b.png")), np.asarray(small.convert("L")))


def test_decompress_keeps_the_metadata(small: Image.Image, tmp_path) -> None:
    """Pixels, ICC profile, Exif and XMP go on into PNG and WebP files (lossless WebP: the pixels of a lossless
    file come back exactly)."""
    exif = Image.Exif()
    exif[0x010F] = "pillow-unz test camera"
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/>'
    small.save(tmp_path / "a.unz", icc_profile=b"not really a profile", exif=exif, xmp=xmp)
    for suffix in (".png", ".webp"):
        target = tmp_path / f"back{suffix}"
        assert cli.main(["decompress", str(tmp_path / "a.unz"), "-o", str(target)]) == 0
        with Image.open(target) as back:
            assert np.array_equal(np.asarray(back), np.asarray(small)), suffix
            assert back.getexif()[0x010F] == "pillow-unz test camera" and back.info["xmp"] == xmp, suffix
            assert back.info["icc_profile"] == b"not really a profile", suffix


def test_roundtrip_command(small: Image.Image, tmp_path, capsys) -> None:
    src = tmp_path / "a.png"
    small.save(src)
    assert cli.main(["roundtrip", str(src)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("identical")


def test_errors_give_messages_and_exit_codes(tmp_path, capsys) -> None:
    assert cli.main(["decompress", str(tmp_path / "missing.unz")]) == 1
    assert "missing.unz" in capsys.readouterr().err
    bad = tmp_path / "bad.unz"
    bad.write_bytes(b"\x89UNZ" + b"\0" * 40)
    assert cli.main(["info", str(bad)]) == 1
    assert "unz: error" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["frobnicate"])
    assert e.value.code == 2


def test_a_reader_that_stops_early_is_no_error(small: Image.Image, tmp_path) -> None:
    """`unz info *.unz | head -1`: when the pipe closes, unz stops quietly, as Unix tools do."""
    small.save(tmp_path / "a.unz")
    with Image.open(tmp_path / "a.unz") as back:
        assert np.array_equal(np.asarray(back), np.asarray(small))
    command = [sys.executable, "-m", "pillow_unz.cli", "info", *[str(tmp_path / "a.unz")] * 200]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as unz:
        assert unz.stdout.readline().startswith(str(tmp_path / "a.unz").encode())
        unz.stdout.close()  # the reader goes away
        errors = unz.stderr.read()  # (the progress bar over several files is there too)
    assert b"error" not in errors and b"Traceback" not in errors, errors
    assert unz.returncode == 1


def test_bench_ablation_reports_the_network_share(small: Image.Image, tmp_path, capsys) -> None:
    """--ablation codes every image with the context networks (the default effort's and effort
    9's) and without one under constants (the shipped ones, and those fitted on the images),
    decodes every coding (the command raises where one fails to round-trip) and reports the
    network's share."""
    import json

    small.save(tmp_path / "rgb.png")
    small.convert("L").save(tmp_path / "gray.png")
    assert cli.main(["bench", str(tmp_path), "--ablation", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 2 and set(result["models"]) == {"1", "3"}
    for m in result["models"].values():
        assert m["network_share"] == round(1 - m["network_bytes"] / m["constant_bytes"], 5)
        assert m["strongest_share"] == round(1 - m["strongest_network_bytes"] / m["constant_bytes"], 5)
        assert m["constant_bytes"] <= m["shipped_bytes"]  # the fit starts from the shipped constants
    assert result["network_bytes"] == sum(m["network_bytes"] for m in result["models"].values())
    assert cli.main(["bench", "--ablation"]) == 1  # needs a folder
    assert "needs one folder" in capsys.readouterr().err


def test_bench_reports_each_folder_on_its_own(small: Image.Image, tmp_path, capsys) -> None:
    import json

    from .drawn import line_chart

    (tmp_path / "photos").mkdir()
    (tmp_path / "screen").mkdir()
    small.save(tmp_path / "photos" / "small.png")
    line_chart(160, 120).save(tmp_path / "screen" / "chart.png")
    folders = [str(tmp_path / "photos"), str(tmp_path / "screen")]
    assert cli.main(["bench", *folders, "--json"]) == 0
    images = json.loads(capsys.readouterr().out)["images"]
    assert list(images) == folders
    assert set(images[folders[1]]["files"]["chart.png"]) >= {"pillow-unz", "PNG (optimize)", "WebP lossless m6"}
    assert cli.main(["bench", *folders]) == 0
    assert "files larger than PNG" in capsys.readouterr().out


def test_bench_memory_measures_each_step_in_its_own_process(small: Image.Image, tmp_path) -> None:
    from pillow_unz import bench

    small.save(tmp_path / "s.png")
    rows = bench.bench_memory([str(tmp_path / "s.png")], generated=(96, 64), progress=False)
    assert [r["file"] for r in rows] == ["s.png", "generated-96x64.png"]
    for r in rows:
        assert 0 < r["process_floor_mb"] <= r["decode_peak_mb"] and r["encode_mps"] > 0 and r["bytes"] > 0
    assert "peak resident memory" in bench.format_memory(rows)


def test_threads_option(small: Image.Image, tmp_path, capsys) -> None:
    from pillow_unz import UnzImagePlugin

    src = tmp_path / "a.png"
    small.save(src)
    saved = dict(UnzImagePlugin._defaults)
    try:
        assert cli.main(["--threads", "1", "compress", str(src)]) == 0
        assert UnzImagePlugin._defaults["threads"] == 1
        assert cli.main(["--threads", "3", "decompress", str(tmp_path / "a.unz"), "-o", str(tmp_path / "b.png")]) == 0
        assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), np.asarray(small))
        assert cli.main(["--threads", "0", "roundtrip", str(src)]) == 1
        assert "threads" in capsys.readouterr().err
    finally:
        UnzImagePlugin._defaults.clear()
        UnzImagePlugin._defaults.update(saved)
