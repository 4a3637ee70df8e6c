"""Scale (issue 4): mixed precision, many pairs in one parameter, DDP sharding, checkpoints and exact resume.

Tiny images (32–64 px), random weights, a few steps each: the maths is the same as at 512 px, only cheaper.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers import (
    REPO,
    SHALLOW,
    TEST_RECIPE,
    StopAt,
    assert_same_state,
    cli_fit_args,
    fit,
    fit_to_last_ckpt,
    make_image,
    subprocess_env,
    tiny_trainer,
)
from pytorch_lightning.plugins import MixedPrecision
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from nst_pl import losses
from nst_pl.callbacks import ImageLogger
from nst_pl.cli import main
from nst_pl.data import PairDataModule
from nst_pl.extractors import VGG16
from nst_pl.module import StyleTransfer

CONFIGS = REPO / "nst_pl" / "configs"
# No coarse-to-fine: the shipped configs' schedule is longer than these runs.
NO_SCALES_CLI = ["--model.scales", "null", "--model.scale_steps", "null"]


def fp16_plugin() -> MixedPrecision:
    # On CPU, Trainer(precision="16-mixed") silently becomes bf16-mixed; an explicit plugin keeps real fp16 autocast
    # and its gradient scaler (Lightning's accelerator connector only rewrites the precision *flag*).
    return MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))


# ------------------------------------------------------------------------------------------- mixed precision
class DtypeSpy(pl.Callback):
    """Records the dtypes that occur inside a training step: extractor activations, Gram matrices, loss, image."""

    def __init__(self, model: StyleTransfer, monkeypatch):
        self.features: set[torch.dtype] = set()
        self.gram_in: set[torch.dtype] = set()
        self.gram_out: set[torch.dtype] = set()
        self.loss: set[torch.dtype] = set()
        self.image: set[torch.dtype] = set()
        self.grad: set[torch.dtype] = set()
        for stage in model.objective.extractor.stages:
            if isinstance(stage, torch.nn.Conv2d):
                stage.register_forward_hook(lambda m, i, o: self.features.add(o.dtype))
        orig = losses.gram

        def gram(f):
            out = orig(f)
            self.gram_in.add(f.dtype)
            self.gram_out.add(out.dtype)
            return out

        # The objective holds its StyleLoss (whose statistic is losses.gram) since it was built.
        monkeypatch.setattr(model.objective, "style_loss", dataclasses.replace(model.objective.style_loss, stat=gram))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.loss.add(outputs["loss"].dtype)
        self.image.add(pl_module.image.dtype)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grad.add(pl_module.image.grad.dtype)


def test_mixed_precision_gradient_points_the_same_way_as_fp32(pair_dirs):
    """One gradient at the same point: half-precision features barely change its direction."""
    torch.manual_seed(0)
    model = StyleTransfer(VGG16(weights=None), **SHALLOW, **TEST_RECIPE)
    data = PairDataModule(content=str(pair_dirs[0]), style=str(pair_dirs[1]), image_size=48)
    data.setup()
    model.objective.bind(data.images)
    content = data.images.content
    model.image = torch.nn.Parameter((content + 0.05 * torch.randn_like(content)).clamp(0, 1))
    grads, totals = {}, {}
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        model.objective._targets.clear()
        model.image.grad = None
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            total = model.objective(model.image, torch.tensor([0]))["total"].sum()
        total.backward()
        grads[dtype], totals[dtype] = model.image.grad.clone(), total.item()
    for dtype in (torch.bfloat16, torch.float16):
        cos = torch.nn.functional.cosine_similarity(grads[torch.float32].flatten(), grads[dtype].flatten(), 0)
        assert cos > 0.995, (dtype, cos)
        assert totals[dtype] == pytest.approx(totals[torch.float32], rel=0.01)


def test_mixed_precision_gives_the_same_picture_with_half_features_and_fp32_losses(tmp_path, pair_dirs, monkeypatch):
    """bf16-mixed and the real fp16 path (autocast fp16 + gradient scaler) against 32-true, k Adam steps each."""
    steps = 5
    ref, data, _ = fit(tmp_path / "fp32", *pair_dirs, max_steps=steps)
    _start, moved = data.images.content, (ref.image.detach() - data.images.content).abs().mean()
    assert moved > 0.02  # the picture did change (Adam moves a pixel by at most lr = 0.007 per step)
    for precision, low in (("bf16-mixed", torch.bfloat16), ("16-mixed", torch.float16)):
        torch.manual_seed(0)
        model = StyleTransfer(VGG16(weights=None), **SHALLOW, **TEST_RECIPE)  # as `fit`'s
        data = PairDataModule(content=str(pair_dirs[0]), style=str(pair_dirs[1]), image_size=48)
        kw = {"plugins": [fp16_plugin()]} if precision == "16-mixed" else {"precision": precision}
        with monkeypatch.context() as mp:
            spy = DtypeSpy(model, mp)
            trainer = tiny_trainer(tmp_path / precision, max_steps=steps, callbacks=[spy], **kw)
            trainer.fit(model, datamodule=data)
        assert str(trainer.precision) == precision
        if precision == "16-mixed":
            scaler = trainer.precision_plugin.scaler  # the real fp16 path, with its gradient scaler
            assert scaler is not None and scaler.is_enabled() and scaler.get_scale() > 1
        assert spy.features == {low}  # the convolutions ran in half precision
        assert spy.gram_in == {low} and spy.gram_out == {torch.float32}  # Gram of half features, in fp32
        assert spy.loss == {torch.float32}
        assert spy.image == {torch.float32} and spy.grad == {torch.float32}
        # Same picture: Adam's first steps are ~lr·sign(grad), so a few pixels with a near-zero gradient flip
        # direction; compare means, not the max (measured: bf16 0.007, fp16 0.003 after 5 steps).
        diff = (ref.image.detach() - model.image.detach()).abs().mean()
        assert diff < 0.02 and diff < 0.25 * moved, (precision, diff, moved)


def test_fp16_with_lbfgs_is_a_clear_error(tmp_path, pair_dirs):
    lbfgs = lambda params: torch.optim.LBFGS(params, lr=0.1, max_iter=1)  # noqa: E731
    with pytest.raises(ValueError, match="LBFGS cannot run with trainer.precision 16-mixed") as err:
        fit(tmp_path, *pair_dirs, max_steps=1, model_kw={"optimizer": lbfgs}, plugins=[fp16_plugin()])
    assert not isinstance(err.value, MisconfigurationException)  # ours, before Lightning's own check in the step
    # bf16 needs no scaler: LBFGS works there.
    model, *_ = fit(tmp_path, *pair_dirs, max_steps=2, model_kw={"optimizer": lbfgs}, precision="bf16-mixed")
    assert torch.isfinite(model.image).all()


# ------------------------------------------------------------------------------------------------ many pairs
class ImageAt(pl.Callback):
    """Keeps a copy of the images right after optimisation step `step`."""

    def __init__(self, step: int):
        self.step, self.image = step, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            self.image = pl_module.image.detach().clone()


def test_each_pair_in_a_batch_equals_its_single_pair_run(tmp_path):
    """4 pairs (2 contents of different aspect ratio × 2 styles) in one [4, 3, H, W] parameter: pair a__s1's result
    equals the run of a__s1 alone — pairs do not interact through the batch, the padding or the loss reduction."""
    c, s = tmp_path / "c", tmp_path / "s"
    make_image(c / "a.png", (48, 40), seed=1)  # the largest canvas: 40 x 48
    make_image(c / "b.png", (48, 30), seed=2)  # wider: reflect-padded at the bottom to 40 x 48
    make_image(s / "s1.png", (32, 32), seed=3, kind="stripes")
    make_image(s / "s2.png", (40, 32), seed=4, kind="stripes")
    steps = 4
    first_alone, first_many = ImageAt(1), ImageAt(1)
    alone, *_ = fit(tmp_path / "alone", c / "a.png", s / "s1.png", max_steps=steps, callbacks=[first_alone])
    many, data, _ = fit(tmp_path / "many", c, s, max_steps=steps, callbacks=[first_many])
    assert data.images.names == ["a__s1", "a__s2", "b__s1", "b__s2"]
    assert many.image.shape == (4, 3, 40, 48) and alone.image.shape == (1, 3, 40, 48)
    # After one step: the same to float precision (the gradients agree to ~1e-7 relative).
    torch.testing.assert_close(first_many.image[0], first_alone.image[0], atol=1e-6, rtol=0)
    # After k steps: Adam divides by sqrt(v) + 1e-8, which turns the ~1e-8 float noise of a near-zero gradient into a
    # step of up to lr: a handful of pixels drift by ~1e-4 (measured: mean 4e-6, max 6e-4), the picture does not.
    h, w = data.images.sizes[0]
    a_alone, a_many = alone.image.detach()[0, :, :h, :w], many.image.detach()[0, :, :h, :w]
    moved = (a_alone - data.images.content[0]).abs().mean()
    assert moved > 0.01  # the picture did change (at most lr = 0.007 per step)
    diff = (a_many - a_alone).abs()
    assert diff.mean() < 1e-4 and diff.max() < 1e-2, (diff.mean(), diff.max())
    # The outputs: the colour step (palette_match: distribution) fits its map to all of a picture's colours, so the
    # drift of a handful of pixels moves every output pixel a little (measured: 2e-4 on average, 5e-3 at most).
    out = (many.output_images()[0] - alone.output_images()[0]).abs()
    assert out.mean() < 1e-3 and out.max() < 2e-2, (out.mean(), out.max())
    # The per-pair loss terms at the same image are the same too: no normalisation over the batch (which Adam's
    # scale invariance would otherwise hide).
    with torch.no_grad():
        many.image[0] = alone.image[0]
        t_many = many.objective(many.image, torch.arange(4), many.schedule.view_size(many.global_step))
        t_alone = alone.objective(alone.image, torch.tensor([0]), alone.schedule.view_size(alone.global_step))
    for key in ("total", "content", "style", "style/relu1_1"):
        assert t_many[key][0].item() == pytest.approx(t_alone[key][0].item(), rel=1e-5), key
    # the same content with the other style went elsewhere: the comparisons above are not vacuous
    other = (many.output_images()[1] - a_alone).abs().mean()
    assert other > 2e-4 and other > 50 * diff.mean(), (other, diff.mean())  # measured 7e-4 at lr 0.007
    assert tuple(many.output_images()[2].shape) == (3, 30, 48)  # padding cropped off


# -------------------------------------------------------------------------------------------------------- DDP
def _three_pairs(tmp_path: Path) -> tuple[Path, Path]:
    c, s = tmp_path / "c", tmp_path / "s"
    make_image(c / "a.png", (40, 32), seed=1)
    make_image(c / "b.png", (32, 40), seed=2)
    make_image(c / "c.png", (40, 40), seed=3)
    make_image(s / "s.png", (32, 32), seed=4, kind="stripes")
    return c, s


def _ddp_args(root: Path, content: Path, style: Path, steps: int) -> list[str]:
    """The ddp recipe at 40 px; the caller adds the devices and the strategy."""
    return cli_fit_args(
        content,
        style,
        root,
        steps,
        *NO_SCALES_CLI,
        # SGD, not Adam: Adam is invariant to the gradient's scale, so it would hide a missing world-size factor
        # (DDP averages gradients); SGD also keeps float noise from being amplified into whole lr-sized steps.
        *("--model.optimizer", "torch.optim.SGD", "--model.optimizer.init_args.lr", "5"),
        # The output's colour step by mean and covariance: the same PNGs to the byte. The distribution's map, fitted to
        # these few flat stripes, turns the ranks' 1e-6 of float noise into up to a few levels of 255 (README).
        *("--model.palette_match", "covariance"),
        size=40,
        config=CONFIGS / "ddp.yaml",
        devices=None,
        log_every=1,
        images_every=2,
    )


def _run_dir(root: Path) -> Path:
    runs = list((root / "lightning_logs").iterdir())
    assert len(runs) == 1, runs  # one version folder: every rank resolved the same log_dir
    return runs[0]


def _ckpt_images(run: Path) -> torch.Tensor:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]["image"]


def _losses(run: Path) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.value for e in acc.Scalars("loss/total")]


def _two_ranks(args: list[str]) -> subprocess.CompletedProcess:
    """`nst-pl fit` on 2 gloo CPU ranks through the real CLI: Lightning's launcher re-executes the command line for
    rank 1."""
    env = subprocess_env()  # without this process's rendezvous variables (see helpers.py)
    proc = subprocess.run(
        [sys.executable, "-m", "nst_pl.cli", *args, "--trainer.devices", "2", "--trainer.strategy", "ddp", "--verbose"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stderr + proc.stdout  # really two ranks (--verbose shows it)
    return proc


def test_ddp_two_cpu_processes_equal_one_process(tmp_path):
    """3 pairs over 2 gloo ranks (shards [0, 2] and [1]) give the images of a single process, to float tolerance."""
    content, style = _three_pairs(tmp_path)
    steps = 4
    # One process (plain strategy), in this interpreter.
    main([*_ddp_args(tmp_path / "one", content, style, steps), "--trainer.devices", "1", "--trainer.strategy", "auto"])
    _two_ranks(_ddp_args(tmp_path / "two", content, style, steps))

    one, two = _run_dir(tmp_path / "one"), _run_dir(tmp_path / "two")
    img_one, img_two = _ckpt_images(one), _ckpt_images(two)
    assert img_two.shape == (3, 3, 40, 40)
    assert torch.load(two / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == steps
    data = PairDataModule(content=str(content), style=str(style), image_size=40)
    data.setup()
    assert (img_one - data.images.content).abs().mean() > 0.03  # the images moved
    assert (img_one - img_two).abs().max() < 1e-5, (img_one - img_two).abs().max()
    # The logged losses are per-pair means over ALL pairs whatever the sharding (all-reduced, then / N).
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-5)

    # Only rank 0 wrote: one event file, one set of PNGs, no second version folder (checked in _run_dir).
    assert len(list(two.glob("events.out.tfevents.*"))) == 1
    pngs = sorted(p.relative_to(two / "images").as_posix() for p in (two / "images").rglob("*.png"))
    assert pngs == sorted(f"{n}__s/step_{k:06d}.png" for n in "abc" for k in (0, 2, 4))
    for p in (two / "images").rglob("step_000004.png"):
        assert p.read_bytes() == (one / "images" / p.relative_to(two / "images")).read_bytes()


def test_ddp_tiles_of_one_picture_on_two_cpu_processes_equal_one_process(tmp_path, pair_dirs):
    """One pair (the common case: rank 1 has no pair of its own) at 48 px in 2 x 2 tiles, coarse-to-fine (40 px)
    then full size, every step tiled: the two ranks share the tiles and give the picture of one process. The
    Laplacian and luminance terms are computed whole on both ranks: their gradient must be counted once."""
    steps = 4
    args = [
        *_ddp_args(tmp_path / "one", *pair_dirs, steps),
        *("--data.image_size", "48", "--model.tile_size", "32", "--model.laplacian_weight", "3"),
        *("--model.scales", "[40]", "--model.scale_steps", "[2]", "--model.coarse_luminance_weight", "30"),
    ]
    main([*args, "--trainer.devices", "1", "--trainer.strategy", "auto"])
    args[args.index(str(tmp_path / "one"))] = str(tmp_path / "two")
    proc = _two_ranks(args)
    assert proc.stderr.count("in 4 tile(s) of 32 px") == 1  # the memory line, from rank 0 only
    one, two = _run_dir(tmp_path / "one"), _run_dir(tmp_path / "two")
    img_one, img_two = _ckpt_images(one), _ckpt_images(two)
    data = PairDataModule(content=str(pair_dirs[0]), style=str(pair_dirs[1]), image_size=48)
    data.setup()
    assert (img_one - data.images.content).abs().mean() > 0.01  # the picture moved
    # The ranks run one thread, this process two: float rounding differs by ~1e-7, which can flip a max-pooling
    # argmax between near-equal values and move a few pixels by up to ~lr x gradient (SGD lr 5). Issue 12: 1/255.
    diff = (img_one - img_two).abs()
    assert diff.max() <= 1 / 255 and diff.mean() < 1e-5, (diff.max(), diff.mean())
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-5)  # the terms are logged once, not once per rank


def test_image_logger_writes_only_on_rank_zero(tmp_path, pair_dirs):
    from pytorch_lightning.utilities import rank_zero_only

    logger = ImageLogger(every_n_steps=0)
    model, _, trainer = fit(tmp_path / "run", *pair_dirs, max_steps=1, callbacks=[logger])
    saved_rank = rank_zero_only.rank
    for rank in (1, 0):
        logger.root, logger._last_saved = tmp_path / f"rank{rank}", None
        rank_zero_only.rank = rank
        try:
            logger.save(trainer, model)
        finally:
            rank_zero_only.rank = saved_rank
    assert not (tmp_path / "rank1").exists()
    assert [p.name for p in (tmp_path / "rank0").rglob("*.png")] == ["step_000001.png"]


# ---------------------------------------------------------------------------------------------- checkpoints
def test_vgg19_checkpoint_holds_images_and_optimizer_state_not_weights(tmp_path):
    """256 px VGG19 run: the checkpoint is the image, its average (ema_decay) and Adam's two moments (+ small
    metadata), ~3.2 MB, not 550 MB."""
    c, s = tmp_path / "c", tmp_path / "s"
    make_image(c / "photo.png", (256, 256), seed=1)
    make_image(s / "paint.png", (64, 64), seed=2, kind="stripes")
    small_style = ("--data.style_size", "64")
    config = CONFIGS / "vgg19.yaml"
    main(
        cli_fit_args(
            c, s, tmp_path, 1, *NO_SCALES_CLI, *small_style, size=256, shallow=False, config=config, images_every=None
        )
    )
    ckpt_path = _run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    image_bytes = 3 * 256 * 256 * 4  # one float32 image
    size = ckpt_path.stat().st_size
    # image + image_ema + exp_avg + exp_avg_sq = 4 images; allow 1 MB for hyper-parameters, loop state and pickling
    assert 4 * image_bytes < size < 4 * image_bytes + 1_000_000, size
    ckpt = torch.load(ckpt_path, weights_only=False)
    assert set(ckpt["state_dict"]) <= {"image", "image_ema", "ema_steps"}
    state = ckpt["optimizer_states"][0]["state"][0]
    assert state["exp_avg"].shape == (1, 3, 256, 256) and state["exp_avg"].abs().sum() > 0


def _cli_resume_args(root, content, style, steps, *extra):
    every_2 = ("--checkpoint.every_n_train_steps", "2")
    config = CONFIGS / "vgg19.yaml"
    return cli_fit_args(
        content, style, root, steps, *NO_SCALES_CLI, *every_2, *extra, size=40, config=config, images_every=0
    )


def test_cli_resume_is_exact(tmp_path, pair_dirs):
    """`fit` 2k steps == `fit` k steps, then `fit --ckpt_path last.ckpt` for k more: images, EMA, Adam (bitwise)."""
    k = 3
    extra = ["--model.ema_decay", "0.9"]
    main(_cli_resume_args(tmp_path / "full", *pair_dirs, 2 * k, *extra))
    main(_cli_resume_args(tmp_path / "half", *pair_dirs, k, *extra))
    half = _run_dir(tmp_path / "half") / "checkpoints" / "last.ckpt"
    # checkpoints every 2 steps, run ends at 3: last.ckpt must hold step 3, not step 2
    assert torch.load(half, weights_only=False)["global_step"] == k
    main(_cli_resume_args(tmp_path / "resumed", *pair_dirs, 2 * k, *extra, "--ckpt_path", str(half)))
    full = torch.load(_run_dir(tmp_path / "full") / "checkpoints" / "last.ckpt", weights_only=False)
    resumed = torch.load(_run_dir(tmp_path / "resumed") / "checkpoints" / "last.ckpt", weights_only=False)
    assert full["global_step"] == 2 * k
    assert_same_state(full, resumed)
    assert int(full["state_dict"]["ema_steps"]) == 2 * k and full["state_dict"]["image_ema"].abs().sum() > 0
    # and the last PNG is the same picture
    png = "images/photo__paint/step_000006.png"
    assert (_run_dir(tmp_path / "full") / png).read_bytes() == (_run_dir(tmp_path / "resumed") / png).read_bytes()


def test_resume_across_a_coarse_to_fine_boundary_with_ema_is_exact(tmp_path, pair_dirs):
    """scales [32] for 4 steps then full size (48 px) up to 8: stop at 3 (coarse phase), resume, finish."""
    model_kw = dict(scales=[32], scale_steps=[4], ema_decay=0.8)

    def run(root, callbacks=(), ckpt_path=None):
        model, last = fit_to_last_ckpt(root, *pair_dirs, 8, model_kw, callbacks, ckpt_path)
        return torch.load(last, weights_only=False), model

    full, full_model = run(tmp_path / "full")
    half, _ = run(tmp_path / "half", callbacks=[StopAt(3)])
    assert half["global_step"] == 3
    resumed, resumed_model = run(
        tmp_path / "resumed", ckpt_path=_run_dir(tmp_path / "half") / "checkpoints" / "last.ckpt"
    )
    assert full["global_step"] == 8
    assert_same_state(full, resumed)
    assert (
        set(full_model.objective._targets) == set(resumed_model.objective._targets) == {(27, 32), (40, 48)}
    )  # both phases ran
    for a, b in zip(full_model.output_images(), resumed_model.output_images()):
        assert torch.equal(a, b)
