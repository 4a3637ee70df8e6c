"""Each recipe option (issue 3) shows its effect in a short run (tiny images, random weights)."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from helpers import SHALLOW, LossRecorder, fit, make_image, tiny_trainer
from PIL import Image

from nst_pl import losses
from nst_pl.callbacks import ImageLogger
from nst_pl.color import palette_distance
from nst_pl.data import PairDataModule
from nst_pl.extractors import VGG16
from nst_pl.module import StyleTransfer
from nst_pl.pictures import initial_images


def lbfgs(params):
    return torch.optim.LBFGS(params, lr=1.0, max_iter=1, history_size=10)


def test_lbfgs_makes_one_evaluation_per_step_and_lowers_the_loss(tmp_path, pair_dirs, monkeypatch):
    calls = []
    real = StyleTransfer.training_step

    def counting(self, batch, batch_idx):
        calls.append(self.global_step)
        return real(self, batch, batch_idx)

    monkeypatch.setattr(StyleTransfer, "training_step", counting)
    rec = LossRecorder()
    model, *_ = fit(tmp_path, *pair_dirs, max_steps=12, model_kw={"optimizer": lbfgs}, callbacks=[rec])
    assert calls == list(range(12))  # one closure evaluation per optimisation step
    assert rec.values[-1]["loss/style"] < 0.5 * rec.values[0]["loss/style"]
    assert model.image.min() >= 0 and model.image.max() <= 1


def test_lbfgs_with_several_iterations_is_refused(tmp_path, pair_dirs):
    with pytest.raises(ValueError, match="max_iter: 1"):
        fit(tmp_path, *pair_dirs, max_steps=1, model_kw={"optimizer": lambda p: torch.optim.LBFGS(p, max_iter=5)})


def test_coarse_to_fine_schedule_and_final_size(tmp_path, pair_dirs):
    sizes = []

    class Spy(__import__("pytorch_lightning").Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            sizes.append(pl_module.schedule.view_size(trainer.global_step))

    model, data, trainer = fit(
        tmp_path,
        *pair_dirs,
        max_steps=6,
        callbacks=[Spy(), ImageLogger(every_n_steps=0)],
        model_kw={"scales": [24, 36], "scale_steps": [2, 2]},
    )
    assert sizes == [(20, 24), (20, 24), (30, 36), (30, 36), (40, 48), (40, 48)]
    assert set(model.objective._targets) == {(20, 24), (30, 36), (40, 48)}  # targets once per scale
    assert model.image.shape[-2:] == (40, 48)  # the parameter never changes shape
    with Image.open(Path(trainer.log_dir) / "images" / "photo__paint" / "step_000006.png") as im:
        assert im.size == (48, 40)


def test_coarse_to_fine_validation(tmp_path, pair_dirs):
    with pytest.raises(ValueError, match="scale_steps"):
        StyleTransfer(VGG16(weights=None), scales=[64], scale_steps=[10, 10])
    with pytest.warns(UserWarning, match="max_steps is 4"):
        short, *_ = fit(tmp_path, *pair_dirs, max_steps=4, model_kw={"scales": [24, 36], "scale_steps": [100, 100]})
    assert short.schedule.steps == [1, 1]  # shrunk to 2/3 of the run: the full size keeps the last 2 steps
    with pytest.raises(ValueError, match="ascending"):
        StyleTransfer(VGG16(weights=None), scales=[128, 64], scale_steps=[1, 1])


def test_coarse_lr_factor_scales_the_steps_of_the_coarse_phases_only(tmp_path, pair_dirs):
    moves, lrs = [], []

    class Spy(__import__("pytorch_lightning").Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.before = pl_module.image.detach().clone()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            moves.append(float((pl_module.image.detach() - self.before).abs().max()))
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    # Adam's first steps move every pixel with a non-zero gradient by the learning rate: 0.1 x 0.25, then 0.1.
    adam = lambda p: torch.optim.Adam(p, lr=0.1)  # noqa: E731
    kw = {"scales": [24], "scale_steps": [2], "coarse_lr_factor": 0.25, "optimizer": adam, "ema_decay": None}
    fit(tmp_path, *pair_dirs, max_steps=4, callbacks=[Spy(), ImageLogger(every_n_steps=0)], model_kw=kw)
    assert moves[0] == pytest.approx(0.025, rel=0.02) and moves[1] <= 0.0251, moves
    assert moves[2] > 0.05 and moves[3] > 0.05, moves  # the full-size phase takes the configured lr again
    assert lrs == [0.1] * 4  # the optimiser (and so its checkpoint) keeps the configured lr between steps
    with pytest.raises(ValueError, match="coarse_lr_factor"):
        StyleTransfer(VGG16(weights=None), coarse_lr_factor=0.0)


def test_coarse_luminance_weight_keeps_the_photos_light_and_dark_through_the_coarse_phases(tmp_path, pair_dirs):
    """The coarse phases with the luminance term end nearer the photo's luminance layout; the term is logged in the
    coarse steps and is 0 at the full size."""
    after_coarse, recorders = {}, {}

    class Keep(__import__("pytorch_lightning").Callback):
        def __init__(self, weight):
            self.weight = weight

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 4:  # the end of the coarse phase
                after_coarse[self.weight] = pl_module.image.detach().clone()

    adam = lambda p: torch.optim.Adam(p, lr=0.05)  # noqa: E731
    for weight in (0.0, 20.0):
        kw = {"scales": [24], "scale_steps": [4], "coarse_luminance_weight": weight, "optimizer": adam}
        recorders[weight] = LossRecorder()
        root = tmp_path / str(weight)
        _, data, _ = fit(root, *pair_dirs, max_steps=5, callbacks=[Keep(weight), recorders[weight]], model_kw=kw)
    photo = losses.luminance_layout(data.images.content)
    gap = {w: float((losses.luminance_layout(img) - photo).pow(2).mean()) for w, img in after_coarse.items()}
    assert gap[20.0] < 0.5 * gap[0.0], gap
    logged = [v["loss/luminance"] for v in recorders[20.0].values]
    assert min(logged[1:4]) > 0 and logged[4] == 0, logged  # step 0 is the photo itself: 0
    with pytest.raises(ValueError, match="model.coarse_luminance_weight"):
        StyleTransfer(VGG16(weights=None), coarse_luminance_weight=-1.0)


def test_ema_output_differs_from_iterate_and_is_smoother(tmp_path, pair_dirs):
    model, *_ = fit(tmp_path, *pair_dirs, max_steps=15, model_kw={"ema_decay": 0.8})
    ema = model.output_images()[0]
    raw = model.image.detach()[0]
    assert (ema - raw).abs().mean() > 1e-3
    assert losses.total_variation(ema[None]) < losses.total_variation(raw[None])
    assert int(model.ema_steps) == 15


@pytest.mark.parametrize("kind", ["mean_std", "wasserstein"])
def test_other_style_losses_fall(tmp_path, pair_dirs, kind):
    rec = LossRecorder()
    fit(tmp_path, *pair_dirs, max_steps=30, model_kw={"style_loss": kind}, callbacks=[rec])
    assert rec.values[-1]["loss/style"] < 0.5 * rec.values[0]["loss/style"]


@pytest.mark.parametrize("init", ["noise", "style", "file"])
def test_initialisations(tmp_path, pair_dirs, init):
    content, style = pair_dirs
    value = str(make_image(tmp_path / "start.png", (20, 30), seed=9)) if init == "file" else init
    model, data, _ = fit(tmp_path, content, style, max_steps=1, model_kw={"init": value})
    image = initial_images(value, data.images)
    assert image.shape == data.images.content.shape
    assert (image - data.images.content).abs().mean() > 0.05  # not the content photo
    if init == "style":
        # noise with the style image's colour statistics
        want = data.images.styles[0][0].flatten(1).mean(1)
        assert torch.allclose(image[0].flatten(1).mean(1), want, atol=0.08)


def test_palette_init_starts_from_the_photo_in_the_paintings_colours(tmp_path, pair_dirs):
    model, data, _ = fit(tmp_path, *pair_dirs, max_steps=1, model_kw={"init": "palette"})
    image = initial_images("palette", data.images)
    photo, painting = data.images.content[0], data.images.styles[0][0]
    assert image.shape == data.images.content.shape
    luma = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    assert ((image[0] - photo) * luma).sum(0).abs().mean() < 0.02  # the photo's luminance: its structure
    assert (image[0] - photo).abs().mean() > 0.01  # …in other colours
    assert palette_distance(image[0], painting) < 0.8 * palette_distance(photo, painting)


def test_preserve_color_histogram_matches_content_statistics(tmp_path, pair_dirs):
    # ema_decay None: the raw iterate is the output before the colour step, so the test can compare with it
    model, data, _ = fit(tmp_path, *pair_dirs, max_steps=8, model_kw={"preserve_color": "histogram", "ema_decay": None})
    out = model.output_images()[0].flatten(1)
    content = data.images.content[0].flatten(1)
    raw = model.image.detach()[0].flatten(1)
    assert torch.allclose(out.mean(1), content.mean(1), atol=0.02)
    assert torch.allclose(out.std(1), content.std(1), atol=0.03)
    assert (raw.mean(1) - content.mean(1)).abs().max() > (out.mean(1) - content.mean(1)).abs().max()


def test_style_strength_moves_the_output_between_the_photo_and_the_optimised_image(tmp_path, pair_dirs):
    model, data, _ = fit(tmp_path, *pair_dirs, max_steps=4, model_kw={"ema_decay": None})
    h, w = data.images.sizes[0]
    photo = data.images.content[0, :, :h, :w]
    full = model.output_images()[0]
    assert (full - photo).abs().max() > 1e-3  # the optimisation moved the picture
    model.style_strength = 0.0
    assert torch.allclose(model.output_images()[0], photo, atol=1e-6)
    model.style_strength = 0.5
    assert torch.allclose(model.output_images()[0] - photo, 0.5 * (full - photo), atol=1e-6)
    with pytest.raises(ValueError, match="style_strength"):
        StyleTransfer(VGG16(weights=None), style_strength=-0.5)


def test_preserve_color_luminance_keeps_content_chroma(tmp_path, pair_dirs):
    from nst_pl.color import rgb_to_yiq

    model, data, _ = fit(tmp_path, *pair_dirs, max_steps=8, model_kw={"preserve_color": "luminance", "ema_decay": None})
    out = rgb_to_yiq(model.output_images()[0])
    content = rgb_to_yiq(data.images.content[0])
    raw = rgb_to_yiq(model.image.detach()[0])
    assert (out[1:] - content[1:]).abs().mean() < 0.02  # I, Q from the photo
    assert (out[0] - raw[0]).abs().mean() < 0.02  # Y from the stylised image


def test_blended_styles(tmp_path):
    c, s = tmp_path / "c", tmp_path / "s"
    make_image(c / "photo.png", seed=1)
    make_image(s / "a.png", seed=2, kind="stripes")
    make_image(s / "b.png", (30, 40), seed=3)
    data = PairDataModule(content=str(c), style=str(s), style_blend=[0.7, 0.3])
    data.setup()
    assert data.images.names == ["photo__a+b"]
    assert data.images.blend.tolist() == [[pytest.approx(0.7), pytest.approx(0.3)]]
    # weights [1, 0] give exactly the run with style a alone
    one, *_ = fit(tmp_path / "x", c, s, max_steps=3, data_kw={"style_blend": [1.0, 0.0]})
    alone, *_ = fit(tmp_path / "y", c, s / "a.png", max_steps=3)
    assert torch.allclose(one.image, alone.image, atol=1e-6)
    mixed, *_ = fit(tmp_path / "z", c, s, max_steps=3, data_kw={"style_blend": [0.5, 0.5]})
    assert (mixed.image - alone.image).abs().max() > 1e-4
    with pytest.raises(ValueError, match="one weight per style"):
        PairDataModule(content=str(c), style=str(s), style_blend=[1.0])
    with pytest.raises(ValueError, match="finite"):  # NaN passed `w < 0` and `sum > 0` checks before
        PairDataModule(content=str(c), style=str(s), style_blend=[float("nan"), 1.0])


def _losses_of_a_random_image(root, pair_dirs, norm: str, relative) -> dict:
    torch.manual_seed(0)
    model = StyleTransfer(VGG16(weights=None, normalization=norm), relative_losses=relative, **SHALLOW)
    data = PairDataModule(content=str(pair_dirs[0]), style=str(pair_dirs[1]), image_size=48)
    tiny_trainer(root / f"{norm}_{relative}", max_steps=1).fit(model, datamodule=data)
    with torch.no_grad():
        model.image.copy_(torch.rand_like(model.image, generator=torch.Generator().manual_seed(1)))
        return model.objective(model.image, torch.tensor([0]))


@pytest.mark.parametrize("relative", [True, "shared"])
def test_relative_losses_make_weights_independent_of_feature_scale(tmp_path, pair_dirs, relative):
    """The same image gives the same relative loss whatever the extractor's input scale (caffe vs imagenet)."""
    vals = {norm: _losses_of_a_random_image(tmp_path, pair_dirs, norm, relative) for norm in ("imagenet", "caffe")}
    # ReLU nets are positively homogeneous but biases break exact equality: within 2x, while raw scales differ ~1e4x
    for term in ("style", "content"):
        ratio = float(vals["caffe"][term] / vals["imagenet"][term])
        assert 0.5 < ratio < 2.0, (term, ratio)


def test_shared_relative_losses_keep_the_raw_proportions_between_layers(tmp_path, pair_dirs):
    raw = _losses_of_a_random_image(tmp_path, pair_dirs, "caffe", False)
    shared = _losses_of_a_random_image(tmp_path, pair_dirs, "caffe", "shared")
    layer = _losses_of_a_random_image(tmp_path, pair_dirs, "caffe", True)
    ratios = {k: float(shared[k] / raw[k]) for k in ("style/relu1_1", "style/relu2_1")}
    assert ratios["style/relu1_1"] == pytest.approx(ratios["style/relu2_1"], rel=1e-5)  # one divisor for all layers
    per_layer = {k: float(layer[k] / raw[k]) for k in ratios}
    assert per_layer["style/relu1_1"] != pytest.approx(per_layer["style/relu2_1"], rel=1e-2)  # `true` reweights
    with pytest.raises(ValueError, match="relative_losses"):
        StyleTransfer(VGG16(weights=None), relative_losses="layer-wise")


def test_preserve_color_histogram_measures_the_real_image_not_the_padding(tmp_path):
    # A tall and a wide photo share one canvas: the tall one is reflect-padded on the right. Its colour statistics
    # must be those of the photo itself, not of the photo plus its mirrored padding.
    c, s = tmp_path / "c", tmp_path / "s"
    make_image(c / "tall.png", (24, 48), seed=1)
    make_image(c / "wide.png", (48, 16), seed=4)
    make_image(s / "paint.png", (40, 40), seed=2, kind="stripes")
    model, data, _ = fit(tmp_path, c, s, max_steps=4, model_kw={"preserve_color": "histogram", "ema_decay": None})
    (h, w), canvas = data.images.sizes[0], data.images.content.shape[-1]
    assert w < canvas  # the tall photo really is padded
    out = model.output_images()[0].flatten(1).double()
    real = data.images.content[0, :, :h, :w].flatten(1).double()
    assert torch.allclose(out.mean(1), real.mean(1), atol=2e-3)
    assert torch.allclose(torch.cov(out), torch.cov(real), atol=2e-3)


@pytest.mark.parametrize("tv_weight", [0.0, 1.0])
def test_no_content_layers_is_pure_texture_synthesis(tmp_path, pair_dirs, tv_weight):
    # content_layers: [] used to crash (zeros_like / .detach() of a float): now the content term is zero.
    rec = LossRecorder()
    model, *_ = fit(
        tmp_path,
        *pair_dirs,
        max_steps=6,
        callbacks=[rec],
        model_kw={"content_layers": [], "init": "noise", "tv_weight": tv_weight},
    )
    assert rec.values[-1]["loss/content"] == 0
    assert rec.values[-1]["loss/style"] < rec.values[0]["loss/style"]
    assert torch.isfinite(model.image).all()


def test_texture_synthesis_with_the_pixel_terms_on_warns(recwarn):
    """content_layers: [] with the recipe's Laplacian or luminance term on is named (they still draw the photo); with
    both at 0 it is quiet."""
    StyleTransfer(VGG16(weights=None), content_layers=[])
    assert any("texture synthesis" in str(w.message) for w in recwarn.list)
    recwarn.clear()
    StyleTransfer(VGG16(weights=None), content_layers=[], laplacian_weight=0.0, coarse_luminance_weight=0.0)
    StyleTransfer(VGG16(weights=None))
    assert not any("texture synthesis" in str(w.message) for w in recwarn.list)


def test_a_style_image_too_small_for_the_layers_names_style_size(tmp_path, pair_dirs):
    # relu2_1 needs 2 px; a 1 px style image used to fail deep inside the extractor.
    with pytest.raises(ValueError, match=r"style image side of 1 px .* data\.style_size"):
        fit(tmp_path, *pair_dirs, max_steps=1, data_kw={"style_size": 1})


@pytest.mark.parametrize("match", ["distribution", "covariance"])
def test_palette_transfer_moves_the_outputs_chroma_towards_the_paintings_and_keeps_its_luminance(
    match, tmp_path, pair_dirs
):
    from nst_pl.color import color_stats, rgb_to_yiq

    kw = {"ema_decay": None, "palette_transfer": 0.0, "palette_match": match}
    model, data, _ = fit(tmp_path, *pair_dirs, max_steps=4, model_kw=kw)
    h, w = data.images.sizes[0]
    raw = model.image.detach()[0, :, :h, :w]
    assert torch.allclose(model.output_images()[0], raw.clamp(0, 1), atol=1e-6)  # 0: the colours as optimised
    painting_mean = color_stats(data.images.styles[0][0][None])[0].flatten()

    def chroma_gap(picture):  # distance of the colour mean to the painting's
        return (color_stats(picture[None])[0].flatten() - painting_mean).norm()

    model.palette_transfer = 1.0
    full = model.output_images()[0]
    # The luminance is kept, but for the pixels whose new colour leaves the RGB cube (clamped): few, on average.
    assert (rgb_to_yiq(full)[0] - rgb_to_yiq(raw.clamp(0, 1))[0]).abs().mean() < 0.01
    assert chroma_gap(full) < 0.5 * chroma_gap(raw)
    model.palette_transfer = 0.5
    assert torch.allclose(model.output_images()[0], (raw.clamp(0, 1) + full) / 2, atol=1e-5)
    with pytest.raises(ValueError, match="palette_transfer"):
        StyleTransfer(VGG16(weights=None), palette_transfer=1.5)
    with pytest.raises(ValueError, match="palette_match 'histogram'; choose covariance or distribution"):
        StyleTransfer(VGG16(weights=None), palette_match="histogram")


def test_palette_match_distribution_brings_the_output_nearer_the_paintings_palette(tmp_path, pair_dirs):
    """The same run's output, moved all the way by each palette_match: the distribution of chrominance lands nearer
    the painting's palette (network-free palette distance) than its mean and covariance alone."""
    model, data, _ = fit(tmp_path, *pair_dirs, max_steps=2, model_kw={"palette_transfer": 1.0})
    painting = data.images.styles[0][0]
    distances = {}
    for match in ("covariance", "distribution"):
        model.palette_match = match
        distances[match] = palette_distance(model.output_images()[0], painting)
    assert distances["distribution"] < distances["covariance"]


def half_flat_photo(flat_columns: int = 24) -> np.ndarray:
    """A 40 x 48 photo, flat grey on its left `flat_columns` (half) and noisy on the rest: [h, w, 3] in [0, 1]."""
    photo = np.full((40, 48, 3), 0.5)
    photo[:, flat_columns:] = np.random.default_rng(0).uniform(0.2, 0.8, (40, 48 - flat_columns, 3))
    return photo


def save_picture(path: Path, array: np.ndarray) -> None:
    """`array` [h, w, 3] in [0, 1] as an 8-bit PNG at `path` (its folder made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((array * 255).astype(np.uint8)).save(path)


class FirstStepMoves(pl.Callback):
    """How far the step moved each pixel of the first pair: |image after − image before| [3, H, W], in `moves`."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before = pl_module.image.detach().clone()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.moves = (pl_module.image.detach() - self.before).abs()[0]


def test_flat_lr_factor_shrinks_the_steps_where_the_photo_is_flat_only(tmp_path, pair_dirs):
    """A photo flat grey on its left half and noisy on its right, and a noise start (so a map of the image instead of
    the photo would be 1 everywhere): Adam's first step moves every pixel by the learning rate (0.1); with
    flat_lr_factor 0.25 the flat half moves a quarter of that and the noisy half as much as before."""
    content = tmp_path / "flat"
    save_picture(content / "photo.png", half_flat_photo())
    moves, spy, adam = {}, FirstStepMoves(), functools.partial(torch.optim.Adam, lr=0.1)
    for factor in (1.0, 0.25):
        kw = {"flat_lr_factor": factor, "optimizer": adam, "ema_decay": None, "init": "noise"}
        fit(tmp_path / str(factor), content, pair_dirs[1], max_steps=1, callbacks=[spy], model_kw=kw)
        moves[factor] = spy.moves
    flat, noisy = (slice(2, -2), slice(2, 20)), (slice(2, -2), slice(28, -2))  # away from the seam
    assert float(moves[1.0][:, flat[0], flat[1]].median()) == pytest.approx(0.1, rel=0.02)
    assert float(moves[0.25][:, flat[0], flat[1]].median()) == pytest.approx(0.025, rel=0.02)
    assert torch.equal(moves[0.25][:, noisy[0], noisy[1]], moves[1.0][:, noisy[0], noisy[1]])
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="model.flat_lr_factor must be above 0 and at most 1"):
            StyleTransfer(VGG16(weights=None), flat_lr_factor=bad)
    lbfgs_kw = {"flat_lr_factor": 0.5, "optimizer": lbfgs}
    with pytest.raises(ValueError, match="LBFGS cannot run with model.flat_lr_factor below 1"):
        fit(tmp_path / "lbfgs", *pair_dirs, max_steps=1, model_kw=lbfgs_kw)


def test_flat_step_shift_moves_the_step_to_a_mostly_flat_photos_detail_as_far_as_the_painting_is_flat(
    tmp_path, pair_dirs
):
    """A photo flat on its left three quarters and a noise start: with a painting of flat colour blocks,
    flat_step_shift 0.5 moves the noisy part twice as far as the flat part (1 ÷ (1 − 0.5)), the map's average over the
    photo 1.25 (1 + 0.5 × 0.5); with a painting of noise (nothing flat), or a photo flat on half of it only, the step is
    the unshifted one. L-BFGS, whose curvature pairs the shift would break, runs without it, with a warning where a
    pair would be shifted."""
    from nst_pl.flat_regions import FLAT_BELOW, local_contrast

    blocks = np.full((40, 40, 3), 0.2)
    blocks[:, 20:] = (0.9, 0.6, 0.1)
    noise = np.random.default_rng(1).uniform(0, 1, (40, 40, 3))
    pictures = (("flat", half_flat_photo(36)), ("half", half_flat_photo()), ("blocks", blocks), ("noise", noise))
    for folder, array in pictures:
        save_picture(tmp_path / folder / "image.png", array)
    moves, spy, adam = {}, FirstStepMoves(), functools.partial(torch.optim.Adam, lr=0.1)
    for photo, painting in (("flat", "blocks"), ("flat", "noise"), ("half", "blocks")):
        for shift in (0.0, 0.5):
            kw = {"flat_step_shift": shift, "optimizer": adam, "ema_decay": None, "init": "noise"}
            fit(tmp_path / f"{shift}{photo}{painting}", tmp_path / photo, tmp_path / painting, 1, kw, callbacks=[spy])
            moves[shift, photo, painting] = spy.moves
    plain, shifted = moves[0.0, "flat", "blocks"], moves[0.5, "flat", "blocks"]
    flat, noisy = (slice(2, -2), slice(2, 32)), (slice(2, -2), slice(40, -2))  # away from the seam
    assert float(plain[:, flat[0], flat[1]].median()) == pytest.approx(0.1, rel=0.02)
    # the unshifted map (contrast between 0.5 and 1) has this mean over the photo; the shifted step is 1.25 / it
    saved = torch.from_numpy(np.asarray(Image.open(tmp_path / "flat" / "image.png"))).permute(2, 0, 1) / 255
    mean = float((local_contrast(saved) / FLAT_BELOW).clamp(0.5, 1).mean())
    assert float(shifted[:, noisy[0], noisy[1]].median()) == pytest.approx(0.1 * 1.25 / mean, rel=0.02)
    assert float(shifted[:, flat[0], flat[1]].median()) == pytest.approx(0.1 * 0.5 * 1.25 / mean, rel=0.02)
    for case in (("flat", "noise"), ("half", "blocks")):
        assert torch.equal(moves[(0.5, *case)], moves[(0.0, *case)])
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="model.flat_step_shift must be at least 0 and below 1"):
            StyleTransfer(VGG16(weights=None), flat_step_shift=bad)
    kw = {"flat_step_shift": 0.5, "optimizer": lbfgs, "init": "noise"}
    with pytest.warns(UserWarning, match="flat_step_shift 0.5 scales the step .* LBFGS runs without it"):
        model, *_ = fit(tmp_path / "lbfgs", tmp_path / "flat", tmp_path / "blocks", 1, kw)
    assert model.schedule.flat_step_shift == 0.0
    with warnings.catch_warnings(record=True) as caught:  # no pair shifted: nothing to say
        warnings.simplefilter("always")
        fit(tmp_path / "lbfgs_half", tmp_path / "half", tmp_path / "blocks", 1, kw)
    assert not [w for w in caught if "flat_step_shift" in str(w.message)]


def test_gradient_floor_moves_a_weakly_pulled_pixel_in_proportion_to_its_pull(tmp_path, pair_dirs):
    """Adam's first step moves every pixel by the learning rate, whatever its gradient; with gradient_floor 1 a pixel
    whose gradient is below its picture's mean (|g| here: Adam's running root mean square at step 1) moves lr × |g| ÷
    that mean, the others still by lr. With gradient_floor_region the step's box average moves whole and the floor
    holds back the rest; with gradient_floor_light 0 the floor holds back the box average's change of brightness too
    (its mean over R, G, B), and its colour still moves whole."""
    from nst_pl.flat_regions import regional_part

    moves, pulls = {}, {}

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.before = pl_module.image.detach().clone()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            schedule = pl_module.schedule
            key = (schedule.gradient_floor, schedule.gradient_floor_region, schedule.gradient_floor_light)
            moves[key] = (pl_module.image.detach() - self.before)[0]
            pulls[key], self.start = pl_module.image.grad.detach()[0], self.before[0]

    spy, lr = Spy(), 0.01
    for floor, region, light in ((0.0, 0.0, 1.0), (1.0, 0.0, 1.0), (1.0, 64.0, 1.0), (1.0, 64.0, 0.0)):
        kw = {"gradient_floor": floor, "gradient_floor_region": region, "gradient_floor_light": light}
        kw.update(ema_decay=None, init="noise", optimizer=functools.partial(torch.optim.Adam, lr=lr))
        fit(tmp_path / f"{floor}_{region}_{light}", *pair_dirs, max_steps=1, callbacks=[spy], model_kw=kw)
    inside = (spy.start > 2 * lr) & (spy.start < 1 - 2 * lr)  # no clamping at 0 or 1
    g = pulls[1.0, 0.0, 1.0]
    assert all(torch.equal(pull, g) for pull in pulls.values())  # the same start, the same gradient
    adam = -lr * g / (g.abs() + 1e-8)  # Adam's first step: lr, but where its epsilon outweighs a vanishing gradient
    factor = (g.abs() / g.abs().mean()).clamp(max=1.0)
    assert float(adam.abs()[inside].median()) == pytest.approx(lr, rel=1e-3)
    assert torch.allclose(moves[0.0, 0.0, 1.0][inside], adam[inside], rtol=1e-3, atol=1e-7)
    assert torch.allclose(moves[1.0, 0.0, 1.0][inside], (adam * factor)[inside], rtol=1e-3, atol=1e-7)
    assert 0.3 < float((factor[inside] < 1).float().mean()) < 0.9  # both kinds of pixel were there
    regional = regional_part(adam[None], [tuple(adam.shape[-2:])], 64.0)[0]  # 64 px per 256: 13 px boxes at 48 px
    floored = regional + factor * (adam - regional)
    assert torch.allclose(moves[1.0, 64.0, 1.0][inside], floored[inside], rtol=1e-3, atol=1e-6)
    assert float((floored - adam * factor)[inside].abs().mean()) > 0.02 * lr  # the region made a difference
    colour = regional - regional.mean(0, keepdim=True)  # light 0: the regional part's brightness is held back too
    assert torch.allclose(moves[1.0, 64.0, 0.0][inside], (colour + factor * (adam - colour))[inside], atol=1e-6)
    assert float((moves[1.0, 64.0, 0.0] - floored)[inside].abs().mean()) > 0.02 * lr  # and that made a difference
    for bad in (-0.1, 10.5, float("nan")):
        with pytest.raises(ValueError, match="model.gradient_floor must be at least 0 and at most 10"):
            StyleTransfer(VGG16(weights=None), gradient_floor=bad)
    for bad in (-1.0, 300.0, float("nan")):
        with pytest.raises(ValueError, match="model.gradient_floor_region must be at least 0 and at most 256"):
            StyleTransfer(VGG16(weights=None), gradient_floor_region=bad)
    for bad in (-0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match="model.gradient_floor_light must be between 0 .* and 1"):
            StyleTransfer(VGG16(weights=None), gradient_floor_light=bad)
    sgd = functools.partial(torch.optim.SGD, lr=0.1)  # the floor is on by default: SGD runs without it, with a warning
    with pytest.warns(UserWarning, match="acts on Adam-type optimisers .* SGD runs without it"):
        model, *_ = fit(tmp_path / "sgd", *pair_dirs, max_steps=1, model_kw={"gradient_floor": 1.0, "optimizer": sgd})
    assert model.schedule.gradient_floor == 0.0


def test_the_regional_part_is_the_box_average_of_each_pair_and_0_in_the_padding():
    """`regional_part` equals a plain average pool over k × k boxes (edges repeated) on each pair's real h × w, with
    k from the pair's own long side; 0 in the padding; region 0 gives 0; `light` scales its mean over the channels
    only."""
    from nst_pl.flat_regions import regional_part

    torch.manual_seed(0)
    step = torch.zeros(2, 3, 40, 64)
    step[0] = torch.randn(3, 40, 64)
    step[1, :, :32, :20] = torch.randn(3, 32, 20)
    out = regional_part(step, [(40, 64), (32, 20)], 33.0)
    for i, (h, w) in enumerate([(40, 64), (32, 20)]):
        k = max(1, round(33 * max(h, w) / 256)) | 1  # 9 and 5 px
        x = F.pad(step[i : i + 1, :, :h, :w], (k // 2,) * 4, mode="replicate")
        assert torch.allclose(out[i, :, :h, :w], F.avg_pool2d(x, k, 1)[0], atol=1e-6)
    assert float(out[1, :, 32:].abs().max()) == 0.0 and float(out[1, :, :, 20:].abs().max()) == 0.0
    assert float(regional_part(step, [(40, 64), (32, 20)], 0.0).abs().max()) == 0.0
    half = regional_part(step, [(40, 64), (32, 20)], 33.0, light=0.5)  # half its brightness, all its colour
    assert torch.allclose(half.mean(1), 0.5 * out.mean(1), atol=1e-6)
    assert torch.allclose(half - half.mean(1, keepdim=True), out - out.mean(1, keepdim=True), atol=1e-6)
    assert float(half[1, :, 32:].abs().max()) == 0.0 and float(half[1, :, :, 20:].abs().max()) == 0.0


def test_the_gradient_step_map_is_per_pair_scale_free_and_1_in_the_padding():
    """Two pairs on one canvas: each pixel's factor is its gradient's root mean square over its own pair's mean (× the
    floor), at most 1; the loss's scale does not matter; a pair without gradient gets 0, not nan."""
    from nst_pl.flat_regions import gradient_step_map

    second_moment = torch.zeros(3, 3, 20, 30)
    second_moment[0, :, :, :15], second_moment[0, :, :, 15:] = 1.0, 0.01  # root mean squares 1 and 0.1: mean 0.55
    second_moment[1, :, :10, :10] = 4.0  # a 10 x 10 pair: all at its mean
    m = gradient_step_map(second_moment, [(20, 30), (10, 10), (20, 30)], 1.0)
    assert bool((m[0, :, :, :15] == 1).all()) and torch.allclose(m[0, :, :, 15:], torch.tensor(0.1 / 0.55))
    assert (
        bool((m[1, :, :10, :10] == 1).all()) and bool((m[1, :, 10:] == 1).all()) and bool((m[1, :, :, 10:] == 1).all())
    )
    assert bool((m[2] == 0).all())
    assert torch.allclose(gradient_step_map(second_moment * 1e-8, [(20, 30), (10, 10), (20, 30)], 1.0), m)
    assert torch.allclose(gradient_step_map(second_moment, [(20, 30)] * 3, 0.5)[0, :, :, 15:], torch.tensor(0.2 / 0.55))


def test_the_step_map_follows_each_photos_contrast_on_a_padded_canvas():
    """Two photos of different sizes on one canvas, one above the 256 px the contrast is measured at: the factor where
    each is flat, 1 where it has detail, 1 in the padding."""
    from nst_pl.flat_regions import SHIFT_GAIN, step_map

    gen = torch.Generator().manual_seed(0)
    canvas = torch.zeros(2, 3, 300, 400)
    for i, (h, w) in enumerate([(300, 400), (120, 160)]):
        canvas[i, :, :h, : w // 2] = 0.5
        canvas[i, :, :h, w // 2 : w] = torch.rand(3, h, w - w // 2, generator=gen)
    m = step_map(canvas, [(300, 400), (120, 160)], 0.3)
    assert m.shape == (2, 1, 300, 400)
    assert torch.allclose(m[0, 0, 10:-10, 10:190], torch.tensor(0.3)) and bool((m[0, 0, 10:-10, 215:-10] == 1).all())
    assert torch.allclose(m[1, 0, 5:115, 5:75], torch.tensor(0.3)) and bool((m[1, 0, 5:115, 90:155] == 1).all())
    assert bool((m[1, 0, 120:] == 1).all()) and bool((m[1, 0, :, 160:] == 1).all())
    # shifted by 0.5: the flat half (1 - 0.5) of the detail's step, the mean 1 + 0.5 x 0.5 without the factor and the
    # factor's map times that with it; the second pair (shift 0) as before
    shifted = step_map(canvas, [(300, 400), (120, 160)], 1.0, [0.5, 0.0])
    assert float(shifted[0, 0].mean()) == pytest.approx(1 + SHIFT_GAIN * 0.5, abs=1e-5)
    detail = shifted[0, 0, 10:-10, 215:-10]
    assert torch.allclose(shifted[0, 0, 10:-10, 10:190], detail[0, 0] / 2) and torch.allclose(detail, detail[0, 0])
    assert torch.allclose(step_map(canvas, [(300, 400), (120, 160)], 0.3, [0.5, 0.0]), m * shifted)
    assert torch.equal(shifted[1], torch.ones_like(shifted[1]))  # factor 1, no shift: every step as Adam takes it
    # the smaller photo shifted: its mean is 1.25 over its own h x w, the padding stays 1
    small = step_map(canvas, [(300, 400), (120, 160)], 1.0, [0.0, 0.5])[1, 0]
    assert float(small[:120, :160].mean()) == pytest.approx(1 + SHIFT_GAIN * 0.5, abs=1e-5)
    assert bool((small[120:] == 1).all()) and bool((small[:, 160:] == 1).all())


def test_a_pairs_shift_follows_its_photos_and_its_paintings_flat_shares():
    """A flat painting has all its pixels flat, one of noise none; under a flat photo a blend of them 10 % flat takes
    0.1 ÷ 0.25 of the shift, a painting a quarter flat or more all of it. A photo takes none of it up to half of it
    flat, all of it from 65 %, in proportion between, measured over its own h × w (not its padding); shift 0: 0."""
    from nst_pl.flat_regions import FLAT_PAINTING_SHARE, FLAT_PHOTO_SHARES, flat_share, pair_shifts

    gen = torch.Generator().manual_seed(0)
    flat, noise = torch.full((3, 60, 80), 0.4), torch.rand(3, 60, 80, generator=gen)
    assert flat_share(flat) == 1.0 and flat_share(noise) == 0.0
    canvas = torch.zeros(4, 3, 120, 160)  # padded: flat outside each photo
    canvas[:, :, :60, :80] = 0.4
    canvas[2, :, :60, 40:80] = noise[:, :, 40:]  # half flat (less the seam)
    canvas[3, :, :60, 50:80] = noise[:, :, 50:]  # flat on 50 of its 80 columns (less the seam)
    sizes = [(60, 80)] * 4
    styles, blend = [[flat, noise], [flat, noise], [noise], [flat]], [[0.1, 0.9], [0.5, 0.5], [1.0], [1.0]]
    shifts = pair_shifts(canvas, sizes, styles, blend, 0.5)
    low, high = FLAT_PHOTO_SHARES
    part = (flat_share(canvas[3, :, :60, :80]) - low) / (high - low)
    assert 0 < part < 1
    assert shifts == pytest.approx([0.5 * 0.1 / FLAT_PAINTING_SHARE, 0.5, 0.0, 0.5 * part])
    assert pair_shifts(canvas, sizes, [[flat]] * 4, [[1.0]] * 4, 0.5)[2] == 0.0  # the half-flat photo: none
    assert pair_shifts(canvas, [(120, 160)] * 4, [[flat]] * 4, [[1.0]] * 4, 0.5)[2] == 0.5  # its padding counted
    assert pair_shifts(canvas, sizes, styles, blend, 0.0) == [0.0] * 4
