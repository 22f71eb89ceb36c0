"""The learned context's inputs (ClassicalPredictor::context) and the teacher-forced probe."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from pillow_unz import _coder
from pillow_unz.finetune import probe


def test_context_is_causal_and_restarts_with_every_band(sample: Image.Image) -> None:
    gray = np.asarray(sample.convert("L"))
    planes = np.ascontiguousarray(np.vstack([gray, gray[::-1]])[None, :300, :80])
    context = _coder.classical_contexts(planes)
    assert context.shape == (probe.CONTEXT_SIZE, 1, 300, 80)
    window = context[: 2 * 10, 0]  # the causal window's samples and residuals
    assert not window[:, 0, 0].any()  # the first sample has no neighbours
    # A sample's context depends on the samples before it only: change the image after it.
    changed = planes.copy()
    changed[0, 120, 41:] = 255 - changed[0, 120, 41:]
    changed[0, 121:] = 0
    after = _coder.classical_contexts(changed)
    assert np.array_equal(after[:, :, :120], context[:, :, :120])
    assert np.array_equal(after[:, 0, 120, :42], context[:, 0, 120, :42])
    assert not np.array_equal(after[:, 0, 120, 42:], context[:, 0, 120, 42:])
    # Two bands (300 rows): the second starts afresh, as the coder does.
    second = _coder.classical_contexts(np.ascontiguousarray(planes[:, 150:]))
    assert np.array_equal(second, context[:, :, 150:])


def test_probe_trains_and_reports(sample: Image.Image, tmp_path, capsys) -> None:
    data, evals = tmp_path / "data", tmp_path / "eval"
    data.mkdir()
    evals.mkdir()
    sample.resize((320, 240)).save(data / "p.png")
    sample.crop((0, 0, 96, 64)).save(evals / "e.png")
    args = ["--channels", "3", "--data", str(data), "--eval", str(evals), "--crop", "48", "--batch", "2",
            "--steps", "2", "--eval-every", "1", "--rows", "4", "--hidden", "8"]
    assert probe.main(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["eval_bpsp_without"] > 0 and [line["step"] for line in lines[1:]] == [1, 2]
