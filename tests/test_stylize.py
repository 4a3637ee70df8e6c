"""Using nst_pl like a tool: `nst-pl stylize`, the Python call, bundled recipes, quiet output and the help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import REPO, SHALLOW_CLI, make_image
from PIL import Image

from nst_pl import StyleTransfer, stylize
from nst_pl.cli import main
from nst_pl.compare import parse_args

# Random weights, shallow layers, 48 px, 3 steps, no coarse-to-fine (its schedule would be shrunk, with a warning).
TINY = (
    "--model.extractor.init_args.weights",
    "null",
    *SHALLOW_CLI,
    "--data.image_size",
    "48",
    "--model.scales",
    "null",
    "--model.scale_steps",
    "null",
    "--trainer.max_steps",
    "3",
    "--trainer.accelerator",
    "cpu",
    "--trainer.devices",
    "1",
)


def run_cli(args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PL_DISABLE_FORK": "1"}
    env.pop("NST_PL_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "nst_pl.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def photo_and_painting(tmp_path: Path) -> tuple[Path, Path]:
    return make_image(tmp_path / "photo.png", (48, 40), seed=1), make_image(
        tmp_path / "painting.png", (40, 40), seed=2, kind="stripes"
    )


def test_stylize_command_writes_the_file_quietly_and_the_python_call_returns_the_same_picture(
    tmp_path, photo_and_painting
):
    photo, painting = photo_and_painting
    work = tmp_path / "work"  # any folder: the default recipe (vgg19) is package data
    work.mkdir()
    proc = run_cli(
        [
            "stylize",
            str(photo),
            str(painting),
            "-o",
            "out.png",
            *TINY,
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.log_every_n_steps",
            "1",
        ],
        work,
    )
    assert proc.returncode == 0, proc.stderr
    out = work / "out.png"
    assert out.is_file()
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "nst-pl: wrote out.png"
    # The run folder is still written, and named.
    run = work / "lightning_logs" / "version_0"
    assert f"run folder {run}" in proc.stdout
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["extractor"]["class_path"].endswith("VGG19")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(run)).Reload().Tags()["scalars"]
    assert "loss/total" in scalars and "hp_metric" not in scalars
    # A clean CPU run prints nothing else: no "GPU available", litlogger tip, deprecation or source lines.
    assert proc.stderr.strip() == "", proc.stderr
    assert [line for line in proc.stdout.splitlines() if "arning" in line or "available" in line] == []

    # The Python call: PIL images in, a PIL image out, the same picture for the same options and seed.
    options = dict(zip(TINY[::2], TINY[1::2]))
    picture = stylize(
        Image.open(photo),
        painting,
        model__extractor__init_args__weights=None,
        content_layers=yaml.safe_load(options["--model.content_layers"]),
        style_layers=yaml.safe_load(options["--model.style_layers"]),
        image_size=48,
        scales=None,
        scale_steps=None,
        trainer={"max_steps": 3, "accelerator": "cpu", "devices": 1, "default_root_dir": str(tmp_path / "api")},
    )
    assert isinstance(picture, Image.Image) and picture.size == Image.open(out).size
    np.testing.assert_array_equal(np.asarray(picture), np.asarray(Image.open(out).convert("RGB")))


def test_stylize_folders_write_one_file_per_pair(tmp_path, photo_and_painting, capsys, monkeypatch):
    photo, painting = photo_and_painting
    styles = tmp_path / "styles"
    make_image(styles / "a.png", (40, 40), seed=3, kind="stripes")
    make_image(styles / "b.png", (40, 40), seed=4, kind="stripes")
    monkeypatch.chdir(tmp_path)
    steps = ["--trainer.max_steps", "1", "--trainer.enable_progress_bar", "false"]
    assert main(["stylize", str(photo), str(styles), "-o", "results", *TINY, *steps]) == 0
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["photo__a.png", "photo__b.png"]
    assert capsys.readouterr().out.strip().splitlines()[-1] == "nst-pl: wrote 2 images in results"


def test_stylize_refuses_one_file_for_several_pairs_before_running(tmp_path, photo_and_painting, capsys):
    photo, _ = photo_and_painting
    styles = tmp_path / "styles"
    make_image(styles / "a.png", seed=3, kind="stripes")
    make_image(styles / "b.png", seed=4, kind="stripes")
    root = tmp_path / "root"
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "stylize",
                str(photo),
                str(styles),
                "-o",
                str(tmp_path / "x.png"),
                *TINY,
                "--trainer.default_root_dir",
                str(root),
            ]
        )
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "2 (content, style) pairs" in err and "folder" in err
    assert not list(root.rglob("*.ckpt"))


def test_stylize_needs_two_images(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["stylize", "photo.jpg"])
    assert exit_.value.code == 2 and "content and a style image" in capsys.readouterr().err


def test_bundled_config_name_works_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["fit", "--config", "vgg19", "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["model"]["extractor"]["class_path"] == "nst_pl.extractors.VGG19"
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", "vgg91"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "no bundled recipe" in err and "vgg19" in err
    # every bundled name, the experiments' and the VGG16 stand-ins' too
    assert "experiments/: alexnet_1_all_conv_content_averaged" in err and "study_vgg16/: vgg16_1_all_conv" in err


def test_compare_finds_bundled_experiments_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = parse_args(["--configs", "experiments/vgg19_*", "--judge_weights", "null"])
    assert [p.stem for p in args.configs][:1] == ["vgg19_1_all_conv_content_averaged"] and len(args.configs) == 4


def test_top_level_help_lists_the_package_commands_only(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("fit", "stylize", "compare"):
        assert f"  {command} " in out
    for lightning_only in ("validate", "predict"):
        assert lightning_only not in out
    with pytest.raises(SystemExit) as exit_:
        main(["validate"])
    assert exit_.value.code == 2


def test_fit_help_shows_the_package_options_before_the_trainer(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    head = "\n".join(out.splitlines()[:60])
    assert "--model.extractor" in head and "--model.style_weight" in head
    assert out.index("--data.image_size") < out.index("--trainer.max_steps")
    assert out.index("--image_logger.every_n_steps") < out.index("--trainer.accelerator")
    assert "--force_precision" in out  # keeps half precision on a CPU that would crawl with it


def test_stylize_help(capsys):
    assert main(["stylize", "--help"]) == 0
    out = capsys.readouterr().out
    assert "-o, --output" in out and "nst-pl fit --help" in out and "--force_precision true" in out


def test_main_classes_are_exported():
    import nst_pl

    assert nst_pl.StyleTransfer is StyleTransfer
    for name in ("PairDataModule", "VGG19", "VGG16", "ConfigError", "stylize"):
        assert hasattr(nst_pl, name)


def test_python_call_reports_unknown_options():
    from nst_pl.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown option 'styl_weight'"):
        stylize("a.jpg", "b.jpg", styl_weight=3)


def test_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's Python API example, as a notebook runs it, on tiny settings (random weights, 32 px, 2 steps)."""
    import shutil

    import nst_pl

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Python API") :]
    code = section[section.index("```python") + len("```python") : section.index("```\n", section.index("```python"))]
    for folder in ("images", "style"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    monkeypatch.chdir(tmp_path)
    calls = []

    def tiny(*args, **kw):  # the example's options, made cheap: later keywords win over the example's
        kw.update(image_size=32, max_steps=2, model__extractor__init_args__weights=None, scales=None, scale_steps=None)
        kw.update(content_layers=["relu2_1"], style_layers=["relu1_1"], accelerator="cpu", devices=1)
        calls.append(kw)
        return stylize(*args, **kw)

    monkeypatch.setattr(nst_pl, "stylize", tiny)
    exec(compile(code, "README.md", "exec"), {})
    assert len(calls) == 2
    assert Image.open(tmp_path / "tubingen_starry.png").size == (32, 24)  # tubingen.jpg is 4:3
