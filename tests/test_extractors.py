"""Feature extractors: one table of expectations per model, every test parametrised over it (timm style).

All CPU, random weights and tiny inputs; the one real-weights test uses the offline VGG16 file and skips when
it is absent.
"""

from __future__ import annotations

import copy
import os
from urllib.error import URLError

import pytest
import torch
import torchvision
from helpers import OFFLINE_VGG16, SHARED
from torch import nn

from nst_pl.extractors import (
    EXTRACTORS,
    VGG16,
    VGG19,
    AlexNet,
    FeatureExtractor,
    ResNet50,
    WeightsError,
    get_extractor,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# name -> input side, {layer: (channels, side)} at that input, a (pre-activation, ReLU) pair, a shallow tap.
CASES: dict[str, dict] = {
    "vgg19": dict(
        size=64,
        shapes={"relu1_1": (64, 64), "pool1": (64, 32), "relu3_1": (256, 16), "relu4_2": (512, 8), "relu5_4": (512, 4)},
        pair=("conv1_1", "relu1_1"),
        shallow="relu1_2",
    ),
    "vgg16": dict(
        size=64,
        shapes={
            "conv1_1": (64, 64),
            "relu2_2": (128, 32),
            "relu3_1": (256, 16),
            "relu5_3": (512, 4),
            "pool5": (512, 2),
        },
        pair=("conv2_1", "relu2_1"),
        shallow="relu1_1",
    ),
    "alexnet": dict(
        size=80,
        shapes={"relu1": (64, 19), "pool1": (64, 9), "relu2": (192, 9), "relu5": (256, 4), "pool3": (256, 1)},
        pair=("conv2", "relu2"),
        shallow="relu1",
    ),
    "resnet50": dict(
        size=32,
        shapes={"conv1": (64, 16), "maxpool": (64, 8), "layer1": (256, 8), "layer2.1": (512, 4), "layer4": (2048, 1)},
        pair=("bn1", "relu"),
        shallow="maxpool",
    ),
}
NAMES = list(CASES)


_BUILT: dict[str, FeatureExtractor] = {}


def make(name: str, **kwargs) -> FeatureExtractor:
    """A fresh extractor with seeded random weights (or `weights=...`). Random builds are cached and handed
    out as deep copies: building VGG-19 costs ~0.4 s, copying it ~0.03 s."""
    if kwargs.get("weights") is not None:
        return get_extractor(name, **kwargs)
    key = f"{name}{sorted(kwargs.items())}"
    if key not in _BUILT:
        torch.manual_seed(0)
        _BUILT[key] = get_extractor(name, weights=None, **kwargs)
    return copy.deepcopy(_BUILT[key])


def image(name: str, n: int = 1) -> torch.Tensor:
    torch.manual_seed(1)
    side = CASES[name]["size"]
    return torch.rand(n, 3, side, side)


def torchvision_state_dict(name: str) -> dict[str, torch.Tensor]:
    """A full torchvision-format state dict (zeros), built without allocating the real model; the classifier /
    fc entries get deliberately wrong shapes: the extractor must ignore them."""
    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None)
    sd = {}
    for k, v in model.state_dict().items():
        head = k.startswith(("classifier.", "fc."))
        sd[k] = torch.zeros(1) if head else torch.zeros(v.shape, dtype=v.dtype)
    return sd


def first_key(name: str) -> str:
    return "conv1.weight" if name == "resnet50" else "features.0.weight"


# ----------------------------------------------------------------------------------------- structure
def test_registry() -> None:
    assert EXTRACTORS == {"vgg19": VGG19, "vgg16": VGG16, "alexnet": AlexNet, "resnet50": ResNet50}
    assert type(get_extractor("VGG19", weights=None)) is VGG19
    with pytest.raises(ValueError, match="valid names: vgg19, vgg16, alexnet, resnet50"):
        get_extractor("inception")


@pytest.mark.parametrize("name", NAMES)
def test_returns_requested_layers_with_shapes(name: str) -> None:
    ext = make(name)
    case = CASES[name]
    feats = ext(image(name, n=2), reversed(list(case["shapes"])))  # any order in, depth order out
    assert list(feats) == sorted(case["shapes"], key=ext.layer_index)
    for layer, (c, side) in case["shapes"].items():
        assert feats[layer].shape == (2, c, side, side), layer


@pytest.mark.parametrize("name", NAMES)
def test_layer_names_and_order(name: str) -> None:
    ext = make(name)
    valid = ext.valid_layers
    assert len(valid) == len(set(valid))
    assert [ext.layer_index(n) for n in valid] == list(range(len(valid)))
    expected_last = {"vgg19": "pool5", "vgg16": "pool5", "alexnet": "pool3", "resnet50": "layer4"}[name]
    assert valid[-1] == expected_last
    if name == "vgg19":
        assert "relu5_4" in valid and valid[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    if name == "vgg16":
        assert "relu5_3" in valid and "relu5_4" not in valid
    if name == "alexnet":
        assert valid == "conv1 relu1 pool1 conv2 relu2 pool2 conv3 relu3 conv4 relu4 conv5 relu5 pool3".split()
    if name == "resnet50":
        assert valid[:6] == ["conv1", "bn1", "relu", "maxpool", "layer1.0", "layer1.1"]
        assert valid.index("layer2.3") + 1 == valid.index("layer2") and "layer3.5" in valid


@pytest.mark.parametrize("name", NAMES)
def test_rejects_bad_layer_requests(name: str) -> None:
    ext = make(name)
    with pytest.raises(ValueError, match=rf"unknown layer 'relu6_1' for {type(ext).__name__}; valid layers: ") as err:
        ext(image(name), [ext.valid_layers[0], "relu6_1"])
    assert ", ".join(ext.valid_layers) in str(err.value)
    with pytest.raises(ValueError, match="at least one layer"):
        ext(image(name), [])
    with pytest.raises(ValueError, match="unknown layer"):
        ext.layer_index("nope")


@pytest.mark.parametrize("name", NAMES)
def test_stops_after_deepest_requested_layer(name: str) -> None:
    ext = make(name)
    calls = {"last": 0, "first": 0}
    hooks = [
        ext.stages[-1].register_forward_hook(lambda *_: calls.__setitem__("last", calls["last"] + 1)),
        ext.stages[0].register_forward_hook(lambda *_: calls.__setitem__("first", calls["first"] + 1)),
    ]
    ext(image(name), [CASES[name]["shallow"]])
    for h in hooks:
        h.remove()
    assert calls == {"last": 0, "first": 1}


@pytest.mark.parametrize("name", NAMES)
def test_tapped_pre_activation_is_not_overwritten(name: str) -> None:
    ext = make(name)
    pre, relu = CASES[name]["pair"]
    feats = ext(image(name), [pre, relu])
    assert feats[pre].min() < 0, "an in-place ReLU clobbered the tapped pre-activation"
    assert torch.equal(feats[relu], feats[pre].clamp(min=0))


@pytest.mark.parametrize("name", NAMES)
def test_frozen_and_always_eval(name: str) -> None:
    ext = make(name)
    assert ext.train() is ext
    assert not any(m.training for m in ext.modules())
    assert not any(p.requires_grad for p in ext.parameters())
    assert not {"mean", "std"} & set(ext.state_dict())  # non-persistent buffers
    # Eval-mode BatchNorm: an image's features do not depend on the rest of the batch.
    layers = [list(CASES[name]["shapes"])[-1]]
    x = image(name, n=2)
    alone, batched = ext(x[:1], layers), ext(x, layers)
    for k in alone:
        # (train-mode BatchNorm would differ by O(1); the tolerance only absorbs float summation order)
        torch.testing.assert_close(alone[k][0], batched[k][0], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_the_input(name: str) -> None:
    ext = make(name)
    x = image(name).requires_grad_(True)
    loss = sum(f.square().mean() for f in ext(x, list(CASES[name]["shapes"])).values())
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in ext.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_min_input_size(name: str) -> None:
    ext = make(name)
    deepest = ext.valid_layers[-1]
    side = ext.min_input_size([deepest])
    assert side == {"vgg19": 32, "vgg16": 32, "alexnet": 63, "resnet50": 1}[name]
    assert ext.min_input_size() == side  # default: the whole network
    feats = ext(torch.rand(1, 3, side, side + 5), [deepest])
    assert min(feats[deepest].shape[-2:]) >= 1
    if side > 1:
        with pytest.raises(ValueError, match=rf"at least {side} px"):
            ext(torch.rand(1, 3, side - 1, side + 5), [deepest])
        # The check is ours, but torch agrees: the network itself cannot run at side - 1.
        x = (torch.rand(1, 3, side - 1, side - 1) - ext.mean) / ext.std
        with pytest.raises(RuntimeError):
            for stage in ext.stages:
                x = stage(x)
    assert ext.min_input_size([ext.valid_layers[0]]) <= side


def test_min_input_size_follows_requested_layers() -> None:
    ext = make("vgg19")
    sizes = {}
    for layer in ["relu1_1", "pool1", "relu3_1", "relu4_2", "relu5_1", "pool5"]:
        sizes[layer] = ext.min_input_size([layer])
    assert sizes == {"relu1_1": 1, "pool1": 2, "relu3_1": 4, "relu4_2": 8, "relu5_1": 16, "pool5": 32}
    assert ext.min_input_size(["relu1_1", "relu5_1"]) == 16


# ------------------------------------------------------------------------------------------- weights
@pytest.mark.parametrize("name", NAMES)
def test_imagenet_offline_error_names_file_and_fix(name: str, monkeypatch, tmp_path) -> None:
    urls = []

    def offline(url: str, *args, **kwargs):
        urls.append(url)
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsError) as err:
        get_extractor(name)  # default weights="imagenet"
    msg = str(err.value)
    filename = os.path.basename(EXTRACTORS[name].weights_enum.IMAGENET1K_V1.url)
    assert urls == [EXTRACTORS[name].weights_enum.IMAGENET1K_V1.url]
    assert filename in msg and urls[0] in msg
    assert str(tmp_path / "hub" / "checkpoints" / filename) in msg
    assert "weights:" in msg and "model.extractor.init_args.weights" in msg
    assert isinstance(err.value, RuntimeError)


def test_torchvision_weights_by_name_with_their_own_statistics(monkeypatch) -> None:
    sd = torchvision_state_dict("vgg16")
    sd["features.0.weight"] += 0.25
    urls = []
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda url, *a, **k: urls.append(url) or sd)
    ext = VGG16(weights="IMAGENET1K_FEATURES")  # torchvision's Caffe-converted VGG16
    assert urls == [torchvision.models.VGG16_Weights.IMAGENET1K_FEATURES.url]
    assert torch.all(ext.stages[0].weight == 0.25)
    assert ext.normalization == "auto (VGG16_Weights.IMAGENET1K_FEATURES)"
    torch.testing.assert_close(ext.std.flatten(), torch.full((3,), 1 / 255))  # Caffe scale, from torchvision
    assert VGG16(weights="imagenet").weights == "imagenet" and urls[-1].endswith("vgg16-397923af.pth")


@pytest.mark.parametrize("name", NAMES)
def test_local_state_dict_loads(name: str, tmp_path) -> None:
    sd = torchvision_state_dict(name)
    key = first_key(name)
    sd[key] = torch.full_like(sd[key], 0.5)
    good = tmp_path / "good.pth"
    torch.save(sd, good)
    ext = make(name, weights=str(good))
    assert torch.all(ext.stages[0].weight == 0.5)  # values landed; classifier/fc keys (wrong shape) ignored

    if name != "resnet50":  # features-only dicts ("0.weight") are accepted too
        feats_only = tmp_path / "features.pth"
        torch.save({k.removeprefix("features."): v for k, v in sd.items() if k.startswith("features.")}, feats_only)
        assert torch.all(make(name, weights=str(feats_only)).stages[0].weight == 0.5)

    with pytest.raises(WeightsError, match="not found"):
        make(name, weights=str(tmp_path / "nope.pth"))


# VGG reads files through the same "features." code path as AlexNet: the two key layouts cover all four.
@pytest.mark.parametrize("name", ["alexnet", "resnet50"])
def test_bad_state_dict_names_the_key(name: str, tmp_path) -> None:
    sd = torchvision_state_dict(name)
    key = first_key(name)
    arch = EXTRACTORS[name].__name__
    bad_shape = dict(sd, **{key: torch.zeros(7, 3, 3, 3)})
    torch.save(bad_shape, tmp_path / "shape.pth")
    with pytest.raises(WeightsError, match=rf"shape mismatch.*{key}.*\(file \(7, 3, 3, 3\)"):
        make(name, weights=str(tmp_path / "shape.pth"))

    missing = {k: v for k, v in sd.items() if k != key}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match=rf"{arch}.*1 missing key\(s\): {key}"):
        make(name, weights=str(tmp_path / "missing.pth"))


def test_wrong_architecture_file_lists_a_few_keys_and_a_count(tmp_path) -> None:
    torch.save(torchvision_state_dict("alexnet"), tmp_path / "alexnet.pth")
    with pytest.raises(WeightsError) as err:
        make("vgg16", weights=str(tmp_path / "alexnet.pth"))
    msg = str(err.value)
    assert "VGG16" in msg and "more)" in msg and "features.2.weight" in msg and "torchvision vgg16" in msg
    torch.save({"not": "a state dict"}, tmp_path / "junk.pth")
    with pytest.raises(WeightsError):
        make("vgg16", weights=str(tmp_path / "junk.pth"))


def test_a_file_of_another_architecture_is_named(tmp_path) -> None:
    # A VGG16 state dict (features only, as the offline file) given to VGG19: the error says which class fits.
    torch.save(VGG16(weights=None)._build_trunk().state_dict(), tmp_path / "vgg16.pth")
    with pytest.raises(WeightsError, match=r"looks like a VGG16 state dict: use nst_pl\.extractors\.VGG16"):
        VGG19(weights=str(tmp_path / "vgg16.pth"))
    # A full torchvision AlexNet given to VGG16 (its classifier keys are ignored by the guess).
    torch.save(torchvision_state_dict("alexnet"), tmp_path / "alexnet.pth")
    with pytest.raises(WeightsError, match=r"looks like an AlexNet state dict: use nst_pl\.extractors\.AlexNet"):
        make("vgg16", weights=str(tmp_path / "alexnet.pth"))
    # A ResNet-50 given to AlexNet; a file that looks like nothing we know.
    torch.save(ResNet50(weights=None)._build_trunk().state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(WeightsError, match=r"looks like a ResNet-50 state dict: use nst_pl\.extractors\.ResNet50"):
        make("alexnet", weights=str(tmp_path / "resnet.pth"))
    torch.save({"0.weight": torch.zeros(4, 3, 5, 5)}, tmp_path / "odd.pth")
    with pytest.raises(WeightsError, match="does not look like a torchvision VGG, AlexNet or ResNet"):
        make("vgg16", weights=str(tmp_path / "odd.pth"))


def test_guess_architecture_from_keys_and_shapes() -> None:
    from nst_pl.extractors.weights import guess_architecture

    def keys_of(builder):  # shapes only: built on the meta device, nothing is allocated or initialised
        with torch.device("meta"):
            return builder(weights=None).state_dict()

    assert guess_architecture(keys_of(torchvision.models.vgg19)) == "nst_pl.extractors.VGG19"
    assert guess_architecture(keys_of(torchvision.models.vgg16)) == "nst_pl.extractors.VGG16"
    assert guess_architecture(keys_of(torchvision.models.resnet50)) == "nst_pl.extractors.ResNet50"
    assert guess_architecture(keys_of(torchvision.models.alexnet)) == "nst_pl.extractors.AlexNet"
    assert guess_architecture(keys_of(torchvision.models.resnet18)).startswith("a ResNet-18 (not supported")
    assert guess_architecture(keys_of(torchvision.models.resnet101)).startswith("a ResNet-101 (not supported")
    assert guess_architecture(keys_of(torchvision.models.vgg16_bn)).startswith("a VGG16 with batch norm")
    assert guess_architecture(keys_of(torchvision.models.vgg11)).startswith("a VGG11 (not supported")
    assert guess_architecture({"module.features.0.weight": torch.zeros(64, 3, 7, 7)}) is None


def test_caffe_weights_with_another_normalization_warn(offline_vgg16, recwarn) -> None:
    VGG16(weights=str(offline_vgg16), normalization="caffe")
    VGG16(weights=str(offline_vgg16), mean=(0.48109, 0.45752, 0.40787), std=(1 / 255, 1 / 255, 1 / 255))
    assert not [w for w in recwarn if "normalization" in str(w.message)]
    for normalization in ("imagenet", "auto"):
        with pytest.warns(UserWarning, match=r"look like the Caffe VGG16 .* set `normalization: caffe`.* ~5[78]x"):
            VGG16(weights=str(offline_vgg16), normalization=normalization)


def test_random_weights_never_warn_about_the_normalization(tmp_path, recwarn) -> None:
    # Random weights (none, or a file of them) in every architecture and normalization: no warning.
    for name in ("vgg16", "vgg19", "alexnet", "resnet50"):
        cls = EXTRACTORS[name]
        torch.save(cls(weights=None)._build_trunk().state_dict(), tmp_path / f"{name}.pth")
        for normalization in ("imagenet", "none", "caffe"):
            cls(weights=str(tmp_path / f"{name}.pth"), normalization=normalization)
            cls(weights=None, normalization=normalization)
    assert not [str(w.message) for w in recwarn if "normalization" in str(w.message)]


@pytest.mark.skipif(not OFFLINE_VGG16.is_file(), reason="offline VGG16 weights not present")
def test_offline_vgg16_weights_load_and_see_a_real_image() -> None:
    from PIL import Image

    photo = SHARED / "images" / "content" / "chelsea.png"
    if photo.is_file():
        img = Image.open(photo).convert("RGB").resize((64, 64), Image.BICUBIC)
        x = torchvision.transforms.functional.to_tensor(img)[None]
    else:  # a smooth synthetic picture is enough to tell trained filters from random ones
        g = torch.linspace(0, 1, 64)
        x = torch.stack([g[None].expand(64, 64), g[:, None].expand(64, 64), (g[None] * g[:, None])])[None]
    real = VGG16(weights=str(OFFLINE_VGG16), normalization="caffe")
    rand = make("vgg16", normalization="caffe")
    layers = ["relu1_1", "relu4_2"]
    f_real, f_rand = real(x, layers), rand(x, layers)
    assert all(torch.isfinite(f).all() for f in f_real.values())
    assert f_real["relu4_2"].abs().sum() > 0
    assert not torch.allclose(f_real["relu1_1"], f_rand["relu1_1"], rtol=0.1, atol=1e-3)
    assert real.weights == str(OFFLINE_VGG16) and "VGG16" in repr(real)


# ------------------------------------------------------------------------------ normalisation, smoothing
def test_normalization_choices() -> None:
    x = image("alexnet")
    out = {}
    for label, kwargs in {
        "imagenet": dict(normalization="imagenet"),
        "caffe": dict(normalization="caffe"),
        "none": dict(normalization="none"),
        "custom": dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        "none_explicit": dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        "auto": dict(),
    }.items():
        ext = make("alexnet", **kwargs)
        out[label] = ext(x, ["conv1"])["conv1"]
    for a, b in [("imagenet", "caffe"), ("imagenet", "none"), ("caffe", "none"), ("custom", "none")]:
        assert not torch.allclose(out[a], out[b]), (a, b)
    torch.testing.assert_close(out["none"], out["none_explicit"])
    torch.testing.assert_close(out["auto"], out["imagenet"])  # auto without torchvision weights = imagenet
    with pytest.raises(ValueError, match="choose one of: auto, imagenet, caffe, none"):
        make("alexnet", normalization="bgr")
    with pytest.raises(ValueError, match="both"):
        make("alexnet", mean=(0.5, 0.5, 0.5))


@pytest.mark.parametrize("name", NAMES)
def test_smoothing_changes_features_and_keeps_them_sane(name: str) -> None:
    layers = list(CASES[name]["shapes"])
    x = image(name, n=2)
    plain, smooth = make(name), make(name, smoothing=1.0)
    p, s = plain(x, layers), smooth(x, layers)
    for layer in layers:
        assert s[layer].shape == p[layer].shape and s[layer].dtype == torch.float32
        # >= 0, not > 0: entries far below a peak underflow to 0 (random ResNet-50 reaches ~100 at layer4).
        assert torch.isfinite(s[layer]).all() and (s[layer] >= 0).all()
        assert not torch.allclose(s[layer], p[layer])
        # Scale: C*H*W * softmax over each image's entries -> mean exactly 1 per image.
        torch.testing.assert_close(s[layer].mean(dim=(1, 2, 3)), torch.ones(2), rtol=1e-4, atol=1e-4)
    # Per image: smoothing one image alone gives the same as inside a batch.
    torch.testing.assert_close(smooth(x[1:], layers)[layers[-1]][0], s[layers[-1]][1], rtol=1e-4, atol=1e-6)


def test_smoothing_per_layer_temperature_and_validation() -> None:
    x = image("resnet50")
    plain = make("resnet50")
    hot = make("resnet50", smoothing={"layer4": 4.0})
    cold = make("resnet50", smoothing={"layer4": 0.5})
    layers = ["maxpool", "layer4"]
    p, h, c = plain(x, layers), hot(x, layers), cold(x, layers)
    torch.testing.assert_close(h["maxpool"], p["maxpool"])  # not listed: untouched

    def entropy(f: torch.Tensor) -> torch.Tensor:
        q = f / f.sum()
        return -torch.special.xlogy(q, q).sum()

    assert entropy(h["layer4"]) > entropy(c["layer4"])  # higher temperature = flatter map
    with pytest.raises(ValueError, match="unknown layer 'layer5'"):
        make("resnet50", smoothing={"layer5": 1.0})
    with pytest.raises(ValueError, match="must be > 0"):
        make("resnet50", smoothing=0.0)
    assert "smoothing={'layer4': 4.0}" in repr(hot)


def test_autocast_runs_convs_in_low_precision() -> None:
    ext = make("vgg19", smoothing={"relu2_1": 1.0})
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = ext(x, ["relu1_1", "relu2_1"])
    assert feats["relu1_1"].dtype == torch.bfloat16  # not forced to float32
    assert feats["relu2_1"].dtype == torch.float32  # smoothing is computed in float32
    feats["relu1_1"].float().square().mean().backward()
    assert torch.isfinite(x.grad).all()


def test_repr_is_short() -> None:
    ext = make("vgg19", normalization="caffe")
    text = repr(ext)
    assert "\n" not in text and len(text) < 200
    assert text == "VGG19(weights='random', normalization='caffe', smoothing=None)"
    assert isinstance(ext, nn.Module)
