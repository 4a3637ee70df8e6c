"""Every shipped YAML parses and runs end to end through `nst-pl fit` (tiny images, random weights)."""

from __future__ import annotations

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
