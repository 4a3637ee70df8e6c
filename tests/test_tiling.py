"""Print size (issue 12): tiled steps give the untiled loss and gradient; tiles own every feature position once.

Tiny pictures (64 x 80 px) with tiles of 32-50 px, so that every picture is cut into 4-9 tiles whose halos overlap;
random weights: exactness does not depend on the weights' values.
"""

from __future__ import annotations

import pytest
import torch
from helpers import (
    SHALLOW,
    LossRecorder,
    StopAt,
    assert_clear_error,
    assert_same_state,
    cli_fit_args,
    fit,
    fit_to_last_ckpt,
    make_objective,
    run_cli,
)

import nst_pl.memory as memory
from nst_pl.data import PairImages
from nst_pl.errors import ConfigError
from nst_pl.extractors import VGG16, VGG19, ResNet50
from nst_pl.module import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS
from nst_pl.schedule import Schedule
from nst_pl.tiling import grid_step, plan_tiles

pytestmark = pytest.mark.usefixtures("one_thread")

H, W = 64, 80
# A pooled content layer and style layers at strides 1, 2 and 4: tiles must align with every grid.
LAYERS = dict(content_layers=["relu2_2"], style_layers=["relu1_1", "relu2_1", "relu3_1"])


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return VGG16(weights=None)


def _pairs(k: int = 1, dtype=torch.float32) -> PairImages:
    """Two pairs on one canvas (the second photo is padded: its real size is smaller), with k styles each."""
    g = torch.Generator().manual_seed(0)
    content = torch.rand(2, 3, H, W, generator=g, dtype=dtype)
    styles = [[torch.rand(3, 48 + 4 * i, 60 - 6 * j, generator=g, dtype=dtype) for i in range(k)] for j in range(2)]
    blend = torch.tensor([[0.7, 0.3], [0.4, 0.6]])[:, :k] if k == 2 else torch.ones(2, 1)
    return PairImages(content, styles, blend, ["a", "b"], [(H, W), (50, W)])


def _step(extractor, tile_size, dtype=torch.float32, k=1, autocast=False, size=None, **kw):
    """The terms and the image's gradient of one evaluation at a fixed random picture (seen at view `size`)."""
    objective = make_objective(extractor, **{**LAYERS, "tv_weight": 0.5, **kw, "tile_size": tile_size})
    objective.bind(_pairs(k, dtype))
    image = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(1), dtype=dtype).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        terms = objective(image, torch.arange(2), size=size)
        terms["total"].sum().backward()
    return {k: v.detach() for k, v in terms.items()}, image.grad, objective


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# ---------------------------------------------------------------------------------------------- geometry
def test_reach_is_read_from_the_network():
    """VGG19 to relu5_1 looks 156 px wide (70 back, 85 ahead) at stride 16; ResNet-50's layer4 427 px at 32
    (its residual branches joined by torch.fx)."""
    rows, cols = VGG19(weights=None).reach(["relu5_1"])["relu5_1"]
    assert rows == cols and (rows.stride, rows.lo, rows.hi) == (16, -70, 85)
    layer4 = ResNet50(weights=None).reach(["layer4"])["layer4"][0]
    assert (layer4.stride, layer4.hi - layer4.lo + 1) == (32, 427)


@pytest.mark.parametrize("size, tile", [((64, 80), 32), ((61, 97), 36), ((200, 45), 50)])
def test_tiles_own_every_feature_position_once(vgg, size, tile):
    layers = [*LAYERS["content_layers"], *LAYERS["style_layers"]]
    reach, shapes = vgg.reach(layers), vgg.feature_shapes(size, layers)
    tiles = plan_tiles(size, tile, reach, shapes)
    assert len(tiles) > 1
    step = grid_step(reach)
    for layer in layers:
        count = torch.zeros(shapes[layer][1:], dtype=torch.long)
        for t in tiles:
            count[t.whole(layer)] += 1
            assert t.rows.start % step == 0 and t.cols.start % step == 0  # on every layer's grid
            assert t.rows.core_stop - t.rows.core_start <= tile + step  # cores about tile_size
        assert (count == 1).all(), layer


# ------------------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("style_loss", ["gram", "mean_std"])
@pytest.mark.parametrize("tile", [32, 36])  # 32 divides 64 x 80, 36 divides neither side
def test_tiled_gradient_equals_untiled(vgg, style_loss, tile):
    """Content, style (relative, per-layer weights), TV and the Laplacian term over two pairs on a padded canvas:
    same loss terms and gradient to float rounding."""
    kw = dict(style_loss=style_loss, style_layer_weights=[1.0, 2.0, 0.5], laplacian_weight=2.0)
    ref_terms, ref, _ = _step(vgg, None, **kw)
    terms, grad, objective = _step(vgg, tile, **kw)
    assert len(objective.tiles_for((H, W))) >= 4
    assert _rel(grad, ref) < 1e-4
    for key, value in ref_terms.items():
        torch.testing.assert_close(terms[key], value, rtol=1e-5, atol=1e-9, msg=key)


def test_tiled_gradient_at_a_coarse_view_with_the_pixel_terms_equals_untiled(vgg):
    """A coarse view larger than a tile: the Laplacian and luminance terms, computed on the whole view, join the
    tiles' sums for the same terms and gradient."""
    kw = dict(laplacian_weight=2.0, coarse_luminance_weight=5.0, size=(48, 60))
    ref_terms, ref, _ = _step(vgg, None, **kw)
    terms, grad, objective = _step(vgg, 32, **kw)
    assert objective.tiles_for((48, 60)) is not None and ref_terms["luminance"].min() > 0
    assert _rel(grad, ref) < 1e-4
    for key, value in ref_terms.items():
        torch.testing.assert_close(terms[key], value, rtol=1e-5, atol=1e-9, msg=key)


def test_tiled_gradient_with_blended_styles_absolute_losses_and_no_content(vgg):
    kw = dict(content_layers=[], relative_losses=False, k=2)
    ref_terms, ref, _ = _step(vgg, None, **kw)
    terms, grad, _ = _step(vgg, 40, **kw)
    assert _rel(grad, ref) < 1e-4
    torch.testing.assert_close(terms["total"], ref_terms["total"], rtol=1e-5, atol=0)


def test_wasserstein_tiled_gradient_is_exact_in_float64_and_as_close_as_rounding_allows_in_float32():
    """The Gaussian W2 loss is ill-conditioned when covariances are nearly singular (random weights, dead
    channels): float32 rounding of the statistics alone moves its gradient by ~1e-3. In float64 the tiled
    gradient is the untiled one; in float32 it is as close to the float64 gradient as the untiled float32 one."""
    torch.manual_seed(0)
    net = VGG16(weights=None).double()
    kw = dict(style_loss="wasserstein")
    _, exact, _ = _step(net, None, torch.float64, **kw)
    _, tiled64, _ = _step(net, 32, torch.float64, **kw)
    assert _rel(tiled64, exact) < 1e-8
    net.float()
    _, untiled32, _ = _step(net, None, **kw)
    _, tiled32, _ = _step(net, 32, **kw)
    assert _rel(tiled32, exact) < 2 * _rel(untiled32, exact) + 1e-5


def test_bf16_autocast_tiled_gradient_matches_untiled(vgg):
    """Under bf16 autocast the features are bf16 and the statistics float32 in both: the gradients agree to the
    precision of bf16 activations."""
    kw = dict(content_layers=["relu1_1"], style_layers=["relu1_1"])  # bf16 convolutions: ~5 s to relu2_1 on CPU
    _, ref, _ = _step(vgg, None, autocast=True, **kw)
    _, grad, _ = _step(vgg, 36, autocast=True, **kw)
    _, fp32, _ = _step(vgg, None, **kw)
    assert _rel(grad, ref) < 2e-2
    assert torch.nn.functional.cosine_similarity(grad.flatten(), fp32.flatten(), dim=0) > 0.99


def test_evaluating_without_grad_gives_the_loss(vgg):
    ref_terms, _, objective = _step(vgg, None)
    objective = make_objective(vgg, **LAYERS, tv_weight=0.5, tile_size=32)
    objective.bind(_pairs())
    image = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        terms = objective(image, torch.arange(2), 0)
    torch.testing.assert_close(terms["total"], ref_terms["total"], rtol=1e-5, atol=0)


# ------------------------------------------------------------------------------------------------ options
def test_coarse_phases_smaller_than_a_tile_are_not_tiled(vgg):
    objective = make_objective(vgg, **LAYERS, tile_size=48)
    objective.bind(_pairs())
    schedule = Schedule([40], [3])
    schedule.fit((H, W), max_steps=10)
    assert [objective.tiles_for(schedule.view_size(s)) is not None for s in (0, 2, 3, 9)] == [False, False, True, True]


@pytest.mark.parametrize("tile", [8, 0, 40.5])
def test_a_tile_size_below_the_networks_stride_is_a_clear_error(vgg, tile):
    with pytest.raises(ConfigError, match="model.tile_size must be a whole number of pixels of at least 16"):
        make_objective(vgg, content_layers=[], style_layers=["relu5_1"], tile_size=tile)


def test_tiles_refuse_activation_smoothing():
    with pytest.raises(ConfigError, match="smoothing"):
        make_objective(VGG16(weights=None, smoothing=1.0), **LAYERS, tile_size=64)


# ------------------------------------------------------------------------------------------ module and CLI
def test_tiles_refuse_fp16_with_its_gradient_scaler(tmp_path, pair_dirs):
    from pytorch_lightning.plugins.precision import MixedPrecision

    # On CPU, precision="16-mixed" silently becomes bf16-mixed: an explicit plugin keeps fp16 and its scaler.
    fp16 = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    with pytest.raises(ConfigError, match="tile_size .* 16-mixed"):
        fit(tmp_path, *pair_dirs, max_steps=1, model_kw={**SHALLOW, "tile_size": 32}, plugins=[fp16])


def _sgd(params):
    # SGD, not Adam: Adam turns the ~1e-8 rounding of near-zero gradients into lr-sized steps (see test_scale.py).
    return torch.optim.SGD(params, lr=20.0)


def test_fit_with_tiles_gives_the_untiled_picture_across_coarse_to_fine(tmp_path, pair_dirs, capsys):
    """scales [32] (one tile: untiled) for 2 steps, then 48 px in 2 x 2 tiles, EMA on: the same images."""
    kw = dict(scales=[32], scale_steps=[2], optimizer=_sgd)
    plain, *_ = fit(tmp_path / "plain", *pair_dirs, max_steps=4, model_kw=kw)
    tiled, *_ = fit(tmp_path / "tiled", *pair_dirs, max_steps=4, model_kw={**kw, "tile_size": 32})
    assert "nst-pl: memory: a 48x40 px step needs about" in capsys.readouterr().err  # said at start, with tiles
    assert [tiled.objective.tiles_for(tiled.schedule.view_size(s)) is not None for s in (1, 2)] == [False, True]
    assert (plain.image - plain.pair_images.content).abs().mean() > 1e-3  # the picture moved
    torch.testing.assert_close(tiled.image, plain.image, atol=1e-5, rtol=0)
    torch.testing.assert_close(tiled.image_ema, plain.image_ema, atol=1e-5, rtol=0)


def test_lbfgs_with_tiles_gives_the_untiled_picture(tmp_path, pair_dirs):
    def lbfgs(params):
        return torch.optim.LBFGS(params, lr=0.5, max_iter=1, history_size=5)

    losses = {"plain": LossRecorder(), "tiled": LossRecorder()}
    plain, *_ = fit(tmp_path / "p", *pair_dirs, 3, dict(optimizer=lbfgs), callbacks=[losses["plain"]])
    tiled, *_ = fit(tmp_path / "t", *pair_dirs, 3, dict(optimizer=lbfgs, tile_size=24), callbacks=[losses["tiled"]])
    assert (plain.image - plain.pair_images.content).abs().mean() > 1e-4
    # The same loss at every step. LBFGS's curvature estimate amplifies the last bits in which the tiles' gradient
    # differs from the whole picture's (Adam keeps them at 1e-7): the pictures differ by up to ~1e-3 after its
    # third, large step (measured 9e-4 with torch 2.14 on CPU), far below what a wrong gradient gives.
    curves = {k: torch.tensor([v["loss/total"] for v in r.values]) for k, r in losses.items()}
    torch.testing.assert_close(curves["tiled"], curves["plain"], rtol=1e-5, atol=0)
    torch.testing.assert_close(tiled.image, plain.image, atol=3e-3, rtol=0)


def test_resume_in_the_middle_of_a_tiled_phase_is_exact(tmp_path, pair_dirs):
    """Stop at step 3 of 6 (tiled from step 2 on), resume from last.ckpt: images, EMA and Adam state bitwise."""
    model_kw = dict(scales=[32], scale_steps=[2], ema_decay=0.8, tile_size=32)

    def run(root, callbacks=(), ckpt_path=None):
        return fit_to_last_ckpt(root, *pair_dirs, 6, model_kw, callbacks, ckpt_path)[1]

    full = torch.load(run(tmp_path / "full"), weights_only=False)
    half = run(tmp_path / "half", callbacks=[StopAt(3)])
    assert torch.load(half, weights_only=False)["global_step"] == 3
    resumed = torch.load(run(tmp_path / "resumed", ckpt_path=half), weights_only=False)
    assert full["global_step"] == 6
    assert_same_state(full, resumed)


def test_cli_takes_model_tile_size(tmp_path, pair_dirs, capsys):
    """The option reaches the objective from the command line (a successful tiled fit is tested above)."""
    code, err = run_cli(cli_fit_args(*pair_dirs, tmp_path / "out", 2, "--model.tile_size", "1"), capsys)
    assert_clear_error(code, err, "model.tile_size", "at least 2")
    assert not (tmp_path / "out").exists()  # refused before the run's folder was written


# ------------------------------------------------------------------------------------------------- memory
def _canvas(h: int, w: int) -> PairImages:
    # Expanded views: the estimate reads shapes only, so a print-size canvas costs no memory here.
    return PairImages(torch.zeros(1).expand(1, 3, h, w), [[torch.zeros(3, 8, 8)]], torch.ones(1, 1), ["a"], [(h, w)])


def default_layers_objective():
    """VGG19 (random weights) with StyleTransfer's default layers: what the default recipe's step holds."""
    layers = dict(content_layers=[*DEFAULT_CONTENT_LAYERS], style_layers=[*DEFAULT_STYLE_LAYERS])
    return make_objective(VGG19(weights=None), **layers)


def test_memory_estimate_grows_with_pixels_and_tiles_bound_it():
    objective = default_layers_objective()
    small, large = (memory.step_bytes(objective, _canvas(s * 3 // 4, s), None) for s in (1024, 2048))
    assert 3.5 < large / small < 4.5  # activations are proportional to the pixel count
    tiled = [memory.step_bytes(objective, _canvas(3072, 4096), t) for t in (1024, 512)]
    assert tiled[1] < tiled[0] < large  # a 4096 px picture in tiles costs less than 2048 px whole


# Run in a fresh process, every tensor in its own mapping (MALLOC_MMAP_THRESHOLD_), so that its resident memory follows
# the tensors alive; the kernel's peak (VmHWM) is reset before each step (clear_refs 5). Prints, per config, the step's
# peak above the state (image, gradient, Adam's moments, photo), in image copies; "skip" where /proc cannot say.
_STEP_MAPS_PEAK = """
import json, sys, types, torch
from pathlib import Path
from nst_pl.schedule import Schedule
side, configs = 1024, json.loads(sys.argv[1])
image = torch.rand(1, 3, side, side, requires_grad=True)
optimizer = torch.optim.Adam([image], lr=0.01)
def closure():
    image.grad = torch.rand_like(image) if image.grad is None else image.grad.uniform_()
    return torch.zeros(())
optimizer.step(closure)  # Adam's state exists
images = types.SimpleNamespace(sizes=[(side, side)], content=torch.rand(1, 3, side, side))
def kib(key):
    return int(next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key)).split()[1])
try:
    Path("/proc/self/clear_refs").write_text("5")
except OSError:
    sys.exit(print("skip"))
for floor, flat, region, light in configs:
    schedule = Schedule(gradient_floor=floor, gradient_floor_region=region, gradient_floor_light=light,
                        flat_lr_factor=flat)
    schedule.fit((side, side), 10)
    schedule.flat_step_map(image, images) if flat < 1 else None  # made once per run, before its steps
    Path("/proc/self/clear_refs").write_text("5")
    before = kib("VmRSS:")
    with schedule.step_size(5, optimizer, image, images) as wrap:
        optimizer.step(wrap(closure))
    print((kib("VmHWM:") - before) * 1024 / image.numel() / 4)
    del wrap  # its copy of the image before the step goes now, not inside the next window
"""


def test_the_step_maps_hold_at_most_the_image_copies_the_estimate_counts():
    import json
    import os
    import subprocess
    import sys
    from types import SimpleNamespace

    # plain Adam; the floor (the default); a large box; the flat map; both maps; the regional brightening held back
    configs = [(0.0, 1.0, 33, 1.0), (1.0, 1.0, 33, 1.0), (1.0, 1.0, 128, 1.0), (0.0, 0.3, 33, 1.0)]
    configs += [(1.0, 0.3, 33, 1.0), (1.0, 1.0, 33, 0.5), (1.0, 1.0, 128, 0.0)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)}
    args = [sys.executable, "-c", _STEP_MAPS_PEAK, json.dumps(configs)]
    out = subprocess.run(args, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    if out.stdout.split() == ["skip"]:
        pytest.skip("/proc/self/clear_refs cannot reset the peak resident memory here")
    peaks = [float(line) for line in out.stdout.split()]
    assert len(peaks) == len(configs)
    if peaks[0] < 1.5:
        pytest.skip("the allocator keeps freed memory (MALLOC_MMAP_THRESHOLD_ ignored): peaks cannot be seen")
    images = SimpleNamespace(sizes=[(1024, 1024)], content=torch.zeros(1).expand(1, 3, 1024, 1024))
    for (floor, flat, region, light), peak in zip(configs, peaks):
        kw = {"gradient_floor": floor, "gradient_floor_region": region, "gradient_floor_light": light}
        counted = Schedule(flat_lr_factor=flat, **kw).step_copies(images)
        assert counted - 1.0 < peak <= counted + 0.25, (floor, flat, region, light)  # 0.25: code pages, small tensors
    assert peaks[2] > peaks[1] + 1  # a larger box, larger running sums: the count follows it


def test_the_estimate_counts_the_step_maps_where_tiles_are_small():
    objective = default_layers_objective()
    images = _canvas(3072, 4096)
    copies = Schedule(gradient_floor=1.0, gradient_floor_region=33).step_copies(images)
    plain, floor = (memory.step_bytes(objective, images, 256, c) for c in (0, copies))
    assert 0 < floor - plain < copies * images.content.numel() * 4  # small tiles: the step maps are the peak
    whole = [memory.step_bytes(objective, _canvas(768, 1024), None, c) for c in (0, copies)]
    assert whole[0] == whole[1]  # untiled, the activations freed before them are more


def test_a_step_that_cannot_fit_is_refused_with_a_tile_size_that_fits(monkeypatch):
    objective = default_layers_objective()
    images = _canvas(1536, 2048)
    free = 4 * memory.GIB
    monkeypatch.setattr(memory, "available_bytes", lambda device: (free, "available RAM"))
    with pytest.raises(ConfigError, match="not enough memory: a 2048x1536 px step needs about") as err:
        memory.check_memory(objective, images, torch.device("cpu"))
    tile = int(str(err.value).split("model.tile_size ")[1].split()[0])
    assert memory.step_bytes(objective, images, tile) <= 0.8 * free
    objective.tile_size = tile
    assert "tile(s) of" in memory.check_memory(objective, images, torch.device("cpu"))


def test_fit_refuses_before_the_first_step_when_memory_is_short(tmp_path, pair_dirs, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: (1000, "available RAM"))
    with pytest.raises(ConfigError, match="lower data.image_size"):
        fit(tmp_path, *pair_dirs, max_steps=1)
