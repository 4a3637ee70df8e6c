"""What a run shows: the progress line in steps (also after a resume), fit's last line, and a TensorBoard without
`epoch`/`hp_metric` but with the view's scale (nst_pl/progress.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import cli_fit_args

from nst_pl.cli import main
from nst_pl.progress import StepProgressBar

pytestmark = pytest.mark.usefixtures("one_thread")


def fit_args(root: Path, pair_dirs, steps: int, *extra: str) -> list[str]:
    """VGG16 at 48 px, 32 px for the first 2 steps, losses logged every step, no PNGs, the progress bar left on."""
    scales = ("--model.scales", "[32]", "--model.scale_steps", "[2]")
    return cli_fit_args(
        *pair_dirs,
        root,
        steps,
        *scales,
        *extra,
        size=48,
        extractor="nst_pl.extractors.VGG16",
        devices=None,
        quiet=False,
        log_every=1,
        images_every=0,
    )


def test_progress_counts_steps_with_scale_and_loss_also_after_a_resume(tmp_path, pair_dirs, capsys, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # stdout is not a terminal here (captured): one plain line per tenth of the run, no bar redrawn with \r.
    main(fit_args(tmp_path, pair_dirs, 4))
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert [re.sub(r"loss [0-9.e+-]+, \d+ s, \d+ s left", "loss L", line) for line in lines[:-1]] == [
        "step 1/4, 32 px, loss L",
        "step 2/4, 32 px, loss L",
        "step 3/4, 48 px, loss L",
        "step 4/4, 48 px, loss L",
    ]
    assert "Epoch" not in out and "v_num" not in out and "\r" not in out
    run = tmp_path / "lightning_logs" / "version_0"
    ckpt = run / "checkpoints" / "last.ckpt"
    # The last line says where the result is.
    tensorboard = f"TensorBoard: tensorboard --logdir {run}"
    assert lines[-1] == f"nst-pl: step 4: images in {run / 'images'}; checkpoint {ckpt}; {tensorboard}"
    assert ckpt.is_file() and (run / "images" / "photo__paint" / "step_000004.png").is_file()

    # TensorBoard: the losses and the scale, no `epoch` (always 0) and no placeholder `hp_metric`.
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload()
    tags = acc.Tags()["scalars"]
    assert "epoch" not in tags and "hp_metric" not in tags
    assert {"loss/total", "loss/style/relu1_1"} <= set(tags)
    assert [(e.step, e.value) for e in acc.Scalars("stylized/scale_long_side")] == [(0, 32), (1, 32), (2, 48), (3, 48)]

    # Resumed in a terminal: the bar starts at the checkpoint's step, with the right total (Lightning's own bar
    # showed "Epoch 1: | 5/?" with a rate counting the skipped steps).
    monkeypatch.setattr(StepProgressBar, "tty", property(lambda self: True))
    main(fit_args(tmp_path, pair_dirs, 6, "--ckpt_path", str(ckpt)))
    frames = [f.strip() for f in capsys.readouterr().out.split("\r") if f.strip()]
    bar = [f.splitlines()[0] for f in frames if f.startswith("step ")]
    assert bar[0].startswith("step 4/6 |")  # before the first step of this run: no "0/?", no "Epoch 1"
    assert re.match(r"step 5/6, 48 px, loss [0-9.e+-]+ \|█{16}.* \d\d:\d\d<\d\d:\d\d, +[0-9.]+ step/s$", bar[1])
    assert re.match(r"step 6/6, 48 px, loss [0-9.e+-]+ \|█{20}\| \d\d:\d\d<00:00, +[0-9.]+ step/s$", bar[-1])
    assert "Epoch" not in "".join(frames) and "v_num" not in "".join(frames)
    assert frames[-1].splitlines()[-1].startswith("nst-pl: step 6: images in ")


def test_no_progress_bar_keeps_the_result_line(tmp_path, pair_dirs, capsys):
    main(fit_args(tmp_path, pair_dirs, 2, "--trainer.enable_progress_bar", "false"))
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nst-pl: step 2: images in ")
