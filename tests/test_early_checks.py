"""Using nst-pl like a tool, 2 (issue 22): answers come in a second, before torch and Lightning are imported; the checks
come in the order a user fixes things (inputs, outputs, options, then weights); nothing is written when a check
fails; half precision on a CPU without fast half-precision maths runs 32-true, saying so once; each message names
the option and the fix. Timings are bench/startup.py's, never a test's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import yaml
from helpers import (
    OFFLINE_VGG16,
    REPO,
    SHALLOW_CLI,
    assert_clear_error,
    fail_writes,
    make_image,
    run_cli,
    subprocess_env,
)

from nst_pl.results import output_paths
from nst_pl.trainer import cpu_precision

pytestmark = pytest.mark.usefixtures("one_thread")

# Random weights, shallow layers, 32 px, 1 step, no coarse-to-fine: the run itself costs ~a second.
TINY = (
    *("--model.extractor.init_args.weights", "null", *SHALLOW_CLI, "--data.image_size", "32"),
    *("--model.scales", "null", "--model.scale_steps", "null", "--trainer.max_steps", "1"),
    *("--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false"),
)


@pytest.fixture
def pictures(tmp_path: Path) -> tuple[Path, Path]:
    return make_image(tmp_path / "photo.png", (48, 40), seed=1), make_image(tmp_path / "painting.png", seed=2)


def _blocker(tmp_path: Path) -> Path:
    """A regular file where a folder would have to be: nothing can be written below it, even by root (the tests
    run as root, which ignores permission bits)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    return blocker


# ------------------------------------------------------------------------------------- before the libraries
# Runs `nst-pl` commands in one fresh interpreter and reports, for each, its exit code and whether torch or Lightning
# had been imported by then.
LIBRARIES_AFTER = r"""
import contextlib, io, json, sys
from nst_pl.cli import main
results = []
for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args) or 0
        except SystemExit as exc:
            code = exc.code
    loaded = [m for m in ("torch", "pytorch_lightning", "lightning_fabric") if m in sys.modules]
    results.append({"code": code, "loaded": loaded, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps(results))
"""


def test_help_and_refusals_are_answered_before_torch_is_imported(tmp_path, pictures):
    photo, painting = pictures
    blocker = _blocker(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    commands = [
        ["--help"],
        ["--version"],
        ["stylize", "--help"],
        ["stylize", "missing.jpg", str(painting), "-o", "out.png"],
        ["stylize", str(photo), str(painting), "-o", str(blocker / "out.png")],
        ["stylize", str(photo), str(painting), "--model.optimizer.init_args.lr", "nan"],
        ["fit", "--config", "vgg19", "--data.content", str(photo), "--data.style", "missing.jpg"],
        ["fit", "--config", "vgg91"],
    ]
    proc = subprocess.run(
        [sys.executable, "-c", LIBRARIES_AFTER, json.dumps(commands)],
        cwd=work,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    for args, result in zip(commands, results):
        expected = 0 if args[-1] in ("--help", "--version") else 2
        assert result["code"] == expected, (args, result)
        assert result["loaded"] == [], (args, result["loaded"])  # answered without torch and Lightning
        assert "Traceback" not in result["err"], (args, result["err"])
    assert "stylize" in results[0]["out"] and "-o, --output" in results[2]["out"]
    assert "missing.jpg" in results[3]["err"] and "a_file" in results[4]["err"]
    assert list(work.iterdir()) == []  # nothing written: no run folder, no result, no probe file left


# -------------------------------------------------------------------------------------------------- order
def _offline(monkeypatch, tmp_path: Path) -> None:
    """No network and an empty weights cache: `weights: imagenet` would fail in its download."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def offline(url, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)


@pytest.mark.parametrize("bad", ["missing photo", "corrupt painting"])
def test_the_inputs_are_checked_before_the_weights(bad, tmp_path, pictures, capsys, monkeypatch):
    """A missing photo and no weights: the user hears about the photo (fixing the weights first would be wasted)."""
    photo, painting = pictures
    _offline(monkeypatch, tmp_path)
    if bad == "missing photo":
        photo, words = tmp_path / "phot.jpg", ("content image not found", "phot.jpg")
    else:
        painting.write_bytes(painting.read_bytes()[:60])  # a truncated PNG
        words = ("painting.png", "not a readable image")
    args = ["stylize", str(photo), str(painting), "-o", str(tmp_path / "out.png"), *TINY]
    args[args.index("null")] = "imagenet"  # the weights that cannot be had
    code, err = run_cli(args, capsys)
    assert_clear_error(code, err, *words)
    assert "torchvision" not in err


# ------------------------------------------------------------------------------------------------ outputs
@pytest.mark.parametrize("where", ["-o file", "-o folder", "default_root_dir"])
def test_an_unwritable_output_fails_before_anything_is_written(where, tmp_path, pictures, capsys, monkeypatch):
    photo, painting = pictures
    blocker = _blocker(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    extra = {
        "-o file": ["-o", str(blocker / "out.png")],
        "-o folder": ["-o", str(blocker / "results") + "/"],
        "default_root_dir": ["--trainer.default_root_dir", str(blocker / "runs")],
    }[where]
    code, err = run_cli(["stylize", str(photo), str(painting), *TINY, *extra], capsys)
    option = "--trainer.default_root_dir" if where == "default_root_dir" else "-o"
    assert_clear_error(code, err, option, "a_file", "is a file, not a folder")
    assert list(work.iterdir()) == []  # no run folder, no result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "painting.png", "photo.png", "work"]


def test_a_folder_without_write_permission_is_named_before_any_step(tmp_path, pictures, capsys, monkeypatch):
    # /sys refuses new files even to root: a folder no user can write to.
    if not Path("/sys").is_dir() or _can_create(Path("/sys")):
        pytest.skip("no folder here refuses new files to this user")
    photo, painting = pictures
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["stylize", str(photo), str(painting), "-o", "/sys/out.png", *TINY], capsys)
    assert_clear_error(code, err, "-o /sys/out.png", "'/sys'", "-o ./out.png")
    assert not (tmp_path / "lightning_logs").exists()


def _can_create(folder: Path) -> bool:
    try:
        (folder / ".nst_pl_probe").touch()
    except OSError:
        return False
    (folder / ".nst_pl_probe").unlink()
    return True


def test_a_result_that_cannot_be_written_at_the_end_says_where_the_run_images_are(
    tmp_path, pictures, capsys, monkeypatch
):
    """The disk fills during the run: the result file fails, and the message names the run's own images."""
    photo, painting = pictures
    fail_writes(monkeypatch, b"\x89PNG", 3)  # the images of steps 0 and 1 are written, then the result fails
    out, runs = tmp_path / "out.png", tmp_path / "runs"
    code, err = run_cli(
        ["stylize", str(photo), str(painting), "-o", str(out), *TINY, "--trainer.default_root_dir", str(runs)], capsys
    )
    images = runs / "lightning_logs" / "version_0" / "images"
    assert_clear_error(code, err, "out.png", "no space left", f"The run's images are in {images}")
    assert not out.exists() and sorted(p.name for p in (images / "photo__painting").iterdir())[-1] == "step_000001.png"


def test_o_without_an_image_type_is_a_png_file_for_one_pair_and_a_folder_for_several():
    assert output_paths("result", ["photo__paint"]) == [Path("result.png")]
    assert output_paths("result/", ["photo__paint"]) == [Path("result") / "photo__paint.png"]
    assert output_paths("result", ["a__x", "b__x"]) == [Path("result") / "a__x.png", Path("result") / "b__x.png"]
    assert output_paths("result.jpg", ["photo__paint"]) == [Path("result.jpg")]


def test_o_without_an_image_type_writes_that_name_with_png(tmp_path, pictures, capsys, monkeypatch):
    photo, painting = pictures
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["stylize", str(photo), str(painting), "-o", "result", *TINY], capsys)
    assert code == 0, err
    assert (tmp_path / "result.png").is_file() and not (tmp_path / "result").exists()


# ------------------------------------------------------------------------------------------------ options
NUMBERS = {
    "nan learning rate": (["--model.optimizer.init_args.lr", "nan"], "model.optimizer.init_args.lr", "not a number"),
    "infinite learning rate": (["--model.optimizer.init_args.lr", "inf"], "learning rate", "infinite"),
    "negative learning rate": (["--model.optimizer.init_args.lr", "-0.1"], "learning rate", "negative"),
    "nan style weight": (["--model.style_weight", "NaN"], "model.style_weight", "not a number"),
    "negative content weight": (["--model.content_weight=-1"], "model.content_weight", "negative"),
    "negative layer weight": (["--model.style_layer_weights", "[1, -1]"], "model.style_layer_weights", "negative"),
    "nan in a config file": (["--config", "{config}"], "model.tv_weight", "not a number"),
}


@pytest.mark.parametrize("case", list(NUMBERS))
def test_a_nan_infinite_or_negative_weight_or_learning_rate_is_named_as_such(case, tmp_path, pictures, capsys):
    photo, painting = pictures
    extra, option, problem = NUMBERS[case]
    config = tmp_path / "recipe.yaml"
    config.write_text("model:\n  tv_weight: .nan\n")
    extra = [a.format(config=config) for a in extra]
    args = ["stylize", str(photo), str(painting), *TINY, *extra, "--trainer.default_root_dir", str(tmp_path / "o")]
    code, err = run_cli(args, capsys)
    assert_clear_error(code, err, option, problem, "must be a finite number >= 0", "set e.g. --model.")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------- precision
def test_half_precision_on_a_cpu_without_fast_half_maths_runs_32_true_with_one_warning(
    tmp_path, pictures, capsys, monkeypatch
):
    import nst_pl.trainer as trainer

    photo, painting = pictures
    monkeypatch.setattr(trainer, "fast_cpu_maths", lambda kind: False)  # an AVX2 CPU: bf16 9-20x slower here
    runs = {}
    for name, extra in (("default", []), ("forced", ["--force_precision", "true"])):
        root = tmp_path / name
        args = ["stylize", str(photo), str(painting), "-o", str(tmp_path / f"{name}.png"), *TINY, *extra]
        code, err = run_cli(
            [*args, "--trainer.precision", "bf16-mixed", "--trainer.default_root_dir", str(root)], capsys
        )
        assert code == 0, err
        saved = yaml.safe_load((root / "lightning_logs" / "version_0" / "config.yaml").read_text())
        runs[name] = saved["trainer"]["precision"], [line for line in err.splitlines() if "precision" in line]
    precision, warnings = runs["default"]
    assert precision == "32-true"  # what ran, in the run's config.yaml
    assert len(warnings) == 1 and warnings[0].startswith("nst-pl: warning: trainer.precision bf16-mixed")
    assert "uses 32-true" in warnings[0] and "--force_precision true" in warnings[0]
    assert runs["forced"] == ("bf16-mixed", [])


def test_the_precision_is_left_alone_on_a_gpu_on_a_fast_cpu_and_in_32_bits(monkeypatch):
    import nst_pl.trainer as trainer

    monkeypatch.setattr(trainer, "fast_cpu_maths", lambda kind: False)
    assert cpu_precision("bf16-mixed", "gpu") == "bf16-mixed"
    assert cpu_precision("16-mixed", "cuda") == "16-mixed"
    assert cpu_precision("32-true", "cpu") == "32-true"
    assert cpu_precision("bf16-mixed", "cpu", force=True) == "bf16-mixed"
    with pytest.warns(UserWarning, match="16-mixed"):
        assert cpu_precision(16, "cpu") == "32-true"  # Lightning's aliases too
    monkeypatch.setattr(trainer, "fast_cpu_maths", lambda kind: True)  # AVX-512 BF16 or AMX
    assert cpu_precision("bf16-mixed", "cpu") == "bf16-mixed"


# ------------------------------------------------------------------------------------------- quick start
def test_the_quick_start_runs_offline_as_printed_and_names_the_lines_that_need_the_network(tmp_path, monkeypatch):
    """Every command line of the README's Quick start either runs without network access (the offline line, run
    here on tiny settings with its own options) or says on its line that it downloads the weights."""
    if not OFFLINE_VGG16.exists():
        pytest.skip("offline VGG16 weights (../shared/weights/vgg16_caffe_hed.pth) not present")
    from nst_pl.cli import main

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Quick start") :]
    block = section[section.index("```bash") + len("```bash") : section.index("```\n", section.index("```bash"))]
    lines = block.replace("\\\n", " ").splitlines()
    runs = [line for line in lines if line.startswith("nst-pl ") and " --help" not in line]
    offline = [line for line in runs if "vgg16_caffe_hed.pth" in line]
    assert len(offline) == 1 and all("network" in line for line in runs if line not in offline), runs
    _offline(monkeypatch, tmp_path)
    monkeypatch.chdir(REPO)  # the README's paths are the repository's
    args = offline[0].split("#")[0].split()[1:]
    args[args.index("-o") + 1] = str(tmp_path / args[args.index("-o") + 1])
    tiny = ["--data.image_size", "32", "--trainer.max_steps", "1", "--model.scales", "null"]
    main([*args, *tiny, "--model.scale_steps", "null", "--trainer.default_root_dir", str(tmp_path)])
    assert (tmp_path / "out.png").is_file()
