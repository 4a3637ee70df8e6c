"""StyleTransfer + PairDataModule + ImageLogger driven through a real Trainer (tiny images, random weights)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REPO, SHALLOW, TEST_RECIPE, LossRecorder, StopAt, fit, make_image, tiny_trainer
from PIL import Image

from nst_pl.callbacks import ImageLogger
from nst_pl.data import PairDataModule
from nst_pl.extractors import VGG16
from nst_pl.module import StyleTransfer


def test_image_is_the_only_trainable_parameter(tmp_path, pair_dirs):
    model, data, _ = fit(tmp_path, *pair_dirs, max_steps=1)
    params = [n for n, p in model.named_parameters() if p.requires_grad]
    assert params == ["image"]
    assert model.image.shape == (1, 3, 40, 48)  # one pair, long side 48, aspect ratio 48:40 kept
    assert not any(k.startswith("extractor") for k in model.state_dict())


def test_loss_falls_and_pixels_stay_in_range(tmp_path, pair_dirs):
    rec = LossRecorder()
    model, *_ = fit(tmp_path, *pair_dirs, max_steps=25, callbacks=[rec])
    first, last = rec.values[0]["loss/total"], rec.values[-1]["loss/total"]
    assert last < 0.5 * first, (first, last)
    assert model.image.min() >= 0 and model.image.max() <= 1
    # the per-layer terms are logged too
    assert {"loss/content", "loss/style", "loss/style/relu1_1", "loss/content/relu2_1"} <= set(rec.values[-1])


def test_targets_are_computed_once_per_size(tmp_path, pair_dirs, monkeypatch):
    model = StyleTransfer(VGG16(weights=None), **SHALLOW)
    targets_built = []
    orig_targets = model.objective.targets

    def spy(size, device):
        if size not in model.objective._targets:
            targets_built.append(size)
        return orig_targets(size, device)

    monkeypatch.setattr(model.objective, "targets", spy)
    data = PairDataModule(content=str(pair_dirs[0]), style=str(pair_dirs[1]), image_size=48)
    tiny_trainer(tmp_path, max_steps=4).fit(model, datamodule=data)
    assert targets_built == [(40, 48)]


def test_image_logger_writes_pngs_at_the_right_steps(tmp_path, pair_dirs):
    model, data, trainer = fit(tmp_path, *pair_dirs, max_steps=5, callbacks=[ImageLogger(every_n_steps=2)])
    folder = Path(trainer.log_dir) / "images" / "photo__paint"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["step_000000.png", "step_000002.png", "step_000004.png", "step_000005.png"]
    with Image.open(folder / "step_000005.png") as im:
        assert im.size == (48, 40) and im.mode == "RGB"
    # the first image is the content photo (init: content), the last one has moved away from it
    first = torch.tensor(list(Image.open(folder / "step_000000.png").getdata()), dtype=torch.float32)
    last = torch.tensor(list(Image.open(folder / "step_000005.png").getdata()), dtype=torch.float32)
    assert (first - last).abs().mean() > 0.5
    events = list(Path(trainer.log_dir).glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert not list(folder.glob("*.tmp*"))


def test_tensorboard_holds_images_and_scalars(tmp_path, pair_dirs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, _, trainer = fit(tmp_path, *pair_dirs, max_steps=4, callbacks=[ImageLogger(every_n_steps=2)])
    acc = EventAccumulator(trainer.log_dir, size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert "stylized/photo__paint" in acc.Tags()["images"]
    assert [e.step for e in acc.Images("stylized/photo__paint")] == [0, 2, 4]
    assert {"loss/total", "loss/style/relu1_1"} <= set(acc.Tags()["scalars"])


def test_terms_reach_the_logger_at_its_steps_with_their_own_values(tmp_path, pair_dirs):
    """The terms other than the total are logged only on the steps the logger writes (`log_every_n_steps`, and the
    step a callback stops the run at): TensorBoard gets them at the total's steps, with the values of those steps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def scalars(root, every, callbacks=()):
        _, _, trainer = fit(root, *pair_dirs, max_steps=8, callbacks=callbacks, log_every_n_steps=every)
        acc = EventAccumulator(trainer.log_dir, size_guidance={"scalars": 0})
        acc.Reload()
        tags = ("loss/total", "loss/style", "loss/style/relu1_1", "stylized/scale_long_side")
        return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in tags}

    every_step = scalars(tmp_path / "1", 1)
    for name, every, callbacks, steps in (("3", 3, (), [2, 5]), ("stop", 3, [StopAt(4)], [2, 3])):
        logged = scalars(tmp_path / name, every, callbacks)
        for tag, points in logged.items():
            assert sorted(points) == steps, (name, tag, points)
            assert points == pytest.approx({k: every_step[tag][k] for k in steps}), (name, tag)


def test_terms_written_after_a_resume_from_an_interrupted_step_are_that_steps(tmp_path, pair_dirs):
    """A checkpoint saved mid-step (Ctrl-C) makes Lightning count the logger's steps one off after the resume: the
    terms still go out with the step they belong to (the logged total is the sum of the logged terms)."""
    import pytorch_lightning as pl
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from nst_pl.callbacks import LastCheckpoint

    class Interrupt(pl.Callback):
        def on_before_optimizer_step(self, trainer, *args):
            if trainer.global_step == 4:
                raise KeyboardInterrupt

    ckpt = LastCheckpoint(every_n_train_steps=1000, save_last=True, save_top_k=0, save_on_exception=True)
    model_kw, kw = {"laplacian_weight": 2.0}, {"enable_checkpointing": True, "log_every_n_steps": 3}
    with pytest.raises(SystemExit):  # Lightning's answer to Ctrl-C, after the callbacks saved last.ckpt
        fit(tmp_path, *pair_dirs, max_steps=12, model_kw=model_kw, callbacks=[ckpt, Interrupt()], **kw)
    again = LastCheckpoint(every_n_train_steps=1000, save_last=True, save_top_k=0)
    _, _, trainer = fit(
        tmp_path, *pair_dirs, max_steps=12, model_kw=model_kw, callbacks=[again], ckpt_path=ckpt.last_model_path, **kw
    )
    acc = EventAccumulator(trainer.log_dir, size_guidance={"scalars": 0})
    acc.Reload()
    curves = {
        k: {e.step: e.value for e in acc.Scalars(f"loss/{k}")} for k in ("total", "content", "style", "laplacian")
    }
    assert len(curves["total"]) >= 2 and all(sorted(c) == sorted(curves["total"]) for c in curves.values()), curves
    weights = {"content": 1.0, "style": TEST_RECIPE["style_weight"], "laplacian": 2.0}
    for step, total in curves["total"].items():
        assert total == pytest.approx(sum(w * curves[k][step] for k, w in weights.items()), rel=1e-4), step


def test_product_pairing_with_different_aspect_ratios(tmp_path):
    c, s = tmp_path / "c", tmp_path / "s"
    make_image(c / "wide.png", (60, 30), seed=1)
    make_image(c / "tall.png", (30, 60), seed=2)
    make_image(s / "a.png", (32, 32), seed=3, kind="stripes")
    make_image(s / "b.png", (40, 32), seed=4, kind="stripes")
    model, data, trainer = fit(tmp_path, c, s, max_steps=2, callbacks=[ImageLogger(every_n_steps=0)])
    assert data.images.names == ["tall__a", "tall__b", "wide__a", "wide__b"]
    assert model.image.shape == (4, 3, 48, 48)  # padded to a common canvas
    outs = model.output_images()
    assert [tuple(o.shape[-2:]) for o in outs] == [(48, 24), (48, 24), (24, 48), (24, 48)]
    with Image.open(Path(trainer.log_dir) / "images" / "tall__b" / "step_000002.png") as im:
        assert im.size == (24, 48)  # the padding is cropped off


def test_zip_pairing_and_bad_lengths(tmp_path):
    c, s = tmp_path / "c", tmp_path / "s"
    for i in range(2):
        make_image(c / f"c{i}.png", seed=i)
        make_image(s / f"s{i}.png", seed=10 + i, kind="stripes")
    data = PairDataModule(content=str(c), style=str(s), pairing="zip")
    assert [p.name for p in data.pairs] == ["c0__s0", "c1__s1"]
    make_image(s / "s2.png", seed=5)
    with pytest.raises(ValueError, match="zip"):
        PairDataModule(content=str(c), style=str(s), pairing="zip")


def test_noise_init_differs_from_content(tmp_path, pair_dirs):
    model, data, _ = fit(tmp_path, *pair_dirs, max_steps=1, model_kw={"init": "noise"})
    assert (model.image.detach() - data.images.content).abs().mean() > 0.1


@pytest.mark.parametrize("config", ["vgg19.yaml", "ddp.yaml"])
def test_the_defaults_are_the_vgg19_recipe(config):
    """A Python user of StyleTransfer gets the shipped recipe's losses and optimiser: every model option the config
    states equals the default, except the extractor and the coarse-to-fine schedule (it depends on the image size)."""
    shipped = yaml.safe_load((REPO / "nst_pl" / "configs" / config).read_text())["model"]
    model = StyleTransfer(VGG16(weights=None))  # VGG16 has every layer of the recipe
    schedule = ("scales", "scale_steps")
    options = {k: v for k, v in shipped.items() if k not in ("extractor", "optimizer", *schedule)}
    recipe = {
        "style_weight",
        "relative_losses",
        "ema_decay",
        "laplacian_weight",
        "coarse_luminance_weight",
        "coarse_lr_factor",
        "flat_step_shift",
        "gradient_floor",
        "gradient_floor_region",
        "gradient_floor_light",
        "palette_transfer",
        "palette_match",
    }
    assert recipe <= set(options)
    assert options == {k: model.hparams[k] for k in options}
    optimizer = model.optimizer_factory([torch.nn.Parameter(torch.zeros(1))])
    module, name = shipped["optimizer"]["class_path"].rsplit(".", 1)
    assert type(optimizer) is getattr(importlib.import_module(module), name)
    assert {k: optimizer.defaults[k] for k in shipped["optimizer"]["init_args"]} == shipped["optimizer"]["init_args"]


def test_the_early_checks_suggest_the_recipe_defaults():
    """early_checks cannot import torch, so it restates the recipe's numbers in its suggestions ("a value like 2000"):
    a retuned default must move them too."""
    from nst_pl.early_checks import NUMBERS

    model = StyleTransfer(VGG16(weights=None))
    keys = ("content_weight", "style_weight", "tv_weight", "laplacian_weight", "coarse_luminance_weight")
    floor = ("gradient_floor", "gradient_floor_region", "gradient_floor_light")
    for key in (*keys, "palette_transfer", "flat_step_shift", *floor):
        assert float(NUMBERS[f"model.{key}"][1]) == model.hparams[key], key
    lr = model.optimizer_factory([torch.nn.Parameter(torch.zeros(1))]).defaults["lr"]
    assert float(NUMBERS["model.optimizer.init_args.lr"][1]) == lr


def test_layer_weights_must_match_layers():
    with pytest.raises(ValueError, match="one weight per layer"):
        StyleTransfer(VGG16(weights=None), style_layers=["relu1_1", "relu2_1"], style_layer_weights=[1.0])
    with pytest.raises(ValueError, match="valid layers"):
        StyleTransfer(VGG16(weights=None), content_layers=["relu9_9"])
    with pytest.raises(ValueError, match="style_weight"):
        StyleTransfer(VGG16(weights=None), style_weight=-1.0)


def test_real_weights_halve_the_style_loss(tmp_path, offline_vgg16):
    """With a real trained VGG16 (Caffe convention), a short 64 px run lowers the style loss by at least half."""
    rec = LossRecorder()
    torch.manual_seed(0)
    model = StyleTransfer(VGG16(weights=str(offline_vgg16), normalization="caffe"), **TEST_RECIPE)
    data = PairDataModule(
        content=str(REPO / "images" / "tubingen.jpg"), style=str(REPO / "style" / "starry_night.jpg"), image_size=64
    )
    tiny_trainer(tmp_path, max_steps=40, callbacks=[rec]).fit(model, datamodule=data)
    first, last = rec.values[0]["loss/style"], rec.values[-1]["loss/style"]
    assert last <= 0.5 * first, (first, last)
