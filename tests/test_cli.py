"""Every shipped YAML parses and runs end to end through `nst-pl fit` (tiny images, random weights), and the recipes
are found as the README says: `configs/NAME.yaml` from the repository root, a bundled name from any folder, also
after a wheel install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, cli_fit_args

from nst_pl.cli import main

# compare_*.yaml hold options of `nst-pl compare` (tests/test_compare.py), not `fit` configs.
CONFIGS = sorted(p for p in (REPO / "nst_pl" / "configs").rglob("*.yaml") if not p.name.startswith("compare_"))


def tiny_args(tmp_path: Path, pair_dirs, config: Path, *extra: str) -> list[str]:
    """`fit --config config` at 80 px for 2 steps, with the config's layers."""
    return cli_fit_args(*pair_dirs, tmp_path, 2, *extra, size=80, shallow=False, config=config)


def test_configs_are_shipped():
    names = {p.relative_to(REPO / "nst_pl" / "configs").as_posix() for p in CONFIGS}
    assert {"vgg19.yaml", "alexnet.yaml", "resnet.yaml"} <= names
    assert len([n for n in names if n.startswith("experiments/")]) >= 9


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.relative_to(REPO / "nst_pl" / "configs").as_posix())
def test_config_runs_end_to_end(config, tmp_path, pair_dirs):
    raw = yaml.safe_load(config.read_text())
    assert isinstance(raw.get("seed_everything"), int), "every shipped config fixes its seed"
    extra = ()
    if raw.get("model", {}).get("scales"):
        # coarse-to-fine configs: shrink the schedule with the image
        extra = ("--model.scales", "[64]", "--model.scale_steps", "[1]", "--trainer.max_steps", "3")
    main(tiny_args(tmp_path, pair_dirs, config, *extra))
    run = next((tmp_path / "lightning_logs").iterdir())
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["extractor"]["class_path"] == raw["model"]["extractor"]["class_path"]
    assert "max_steps" not in saved["model"]  # linked from trainer.max_steps, not repeated
    pngs = sorted((run / "images").rglob("*.png"))
    assert pngs and pngs[-1].name.startswith("step_0000")
    assert (run / "checkpoints" / "last.ckpt").exists()


def test_print_config(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(REPO / "nst_pl" / "configs" / "vgg19.yaml"), "--print_config"])
    assert exit_.value.code in (0, None)
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["model"]["extractor"]["class_path"] == "nst_pl.extractors.VGG19"
    shipped = yaml.safe_load((REPO / "nst_pl" / "configs" / "vgg19.yaml").read_text())
    assert out["image_logger"]["every_n_steps"] == shipped["image_logger"]["every_n_steps"]
    assert out["model"]["relative_losses"] == "shared"  # a string value of the bool | Literal option survives
    assert out["trainer"]["use_distributed_sampler"] is False


def test_the_design_cards_command_works_from_the_repository_root(tmp_path, monkeypatch, capsys):
    # One copy of the recipes: the top-level configs/ is the package's.
    assert (REPO / "configs" / "resnet.yaml").resolve() == (REPO / "nst_pl" / "configs" / "resnet.yaml").resolve()
    for folder in (REPO, tmp_path):  # configs/NAME.yaml names the bundled recipe where no such file exists
        monkeypatch.chdir(folder)
        with pytest.raises(SystemExit) as exit_:
            main(["fit", "--config", "configs/resnet.yaml", "--print_config"])
        assert exit_.value.code in (0, None)
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["model"]["extractor"]["class_path"] == "nst_pl.extractors.ResNet50"


def test_a_bundled_recipe_works_from_an_empty_folder_after_a_wheel_install(tmp_path):
    """The wheel carries the recipes: build it from the source, install it alone into a folder, and run its
    `nst-pl fit --config vgg19 --print_config` from an empty folder (nothing of the checkout on the path)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "nst_pl", source / "nst_pl", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path, source], check=True)
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", site, *tmp_path.glob("*.whl")], check=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NST_PL_DEBUG")}
    env["PYTHONPATH"] = str(site)
    where = subprocess.run(
        [sys.executable, "-c", "import nst_pl; print(nst_pl.__file__)"], cwd=empty, env=env, capture_output=True
    )
    assert Path(where.stdout.decode().strip()).is_relative_to(site), where  # the installed package, not the checkout
    done = subprocess.run(
        [site / "bin" / "nst-pl", "fit", "--config", "vgg19", "--print_config"], cwd=empty, env=env, capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert yaml.safe_load(done.stdout)["model"]["extractor"]["class_path"] == "nst_pl.extractors.VGG19"
    assert not any(empty.iterdir())


def test_help_lists_model_options(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    for option in (
        "--model.style_weight",
        "--data.image_size",
        "--image_logger.every_n_steps",
        "--model.preserve_color",
    ):
        assert option in out


def test_command_line_overrides_data(tmp_path, pair_dirs):
    content, style = pair_dirs
    files = ("--data.content", str(content / "photo.png"), "--data.style", str(style / "paint.png"))
    main(tiny_args(tmp_path, pair_dirs, REPO / "nst_pl" / "configs" / "vgg19.yaml", *files))
    run = next((tmp_path / "lightning_logs").iterdir())
    assert [p.name for p in (run / "images").iterdir()] == ["photo__paint"]
    assert sorted(p.name for p in (run / "images" / "photo__paint").iterdir()) == [
        "step_000000.png",
        "step_000001.png",
        "step_000002.png",
    ]
