"""Image files in and out: decoding any image to a tensor, resizing/padding, and atomic writes. Finding the inputs and
opening a file safely, which need no torch, are image_files.py's (`find_images` is re-exported here).

Each input trap and each write failure is handled once. Conventions used throughout the package:

* An image is a float32 tensor ``[3, H, W]`` (or a batch ``[N, 3, H, W]``) of RGB values in ``[0, 1]``.
* Every problem a *user* can cause with an input (a missing file, a corrupt JPEG) raises :class:`ImageError`,
  whose message names the file, says what is wrong and how to fix it; a failed write (a full disk) raises
  :class:`OutputError`. Programming errors (a tensor of the wrong shape) raise plain ``ValueError``.
* Files are written atomically (temporary file in the same folder, ``fsync``, ``os.replace``): a killed run or
  a full disk never leaves a half-written PNG or checkpoint behind, and never destroys the previous version.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from nst_pl.errors import ImageError, OutputError
from nst_pl.image_files import IMAGE_EXTENSIONS, check_resized, expanduser, find_images, opened, target_size

__all__ = [
    "IMAGE_EXTENSIONS",
    "atomic_write_bytes",
    "find_images",
    "load_image",
    "pad_to",
    "resize_long_side",
    "save_image",
    "to_pil",
]

PathLike = str | os.PathLike

# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


def load_image(path: PathLike, long_side: int | None = None, *, max_pixels: int = 300_000_000) -> torch.Tensor:
    """Loads an image file as an upright RGB float tensor.

    The format is detected from the content (a WEBP named ``.jpg`` loads). The EXIF orientation is applied.
    Every PIL mode is turned into RGB: grayscale is repeated, palettes are expanded, transparency (alpha or a
    transparent palette entry) is composited on white, CMYK is converted (naively: embedded ICC profiles are not
    applied), and 16-bit / 32-bit / float images are scaled from their own range, not clipped at 255.
    Animated images give their first frame.

    Enormous images are not decoded at full size when ``long_side`` is given and the format allows it: JPEGs are
    decoded at 1/2, 1/4 or 1/8 scale by libjpeg (``Image.draft``) and then resized; other formats are decoded
    and then shrunk with ``reducing_gap`` (fast integer reduction first, then Lanczos).

    Args:
        path: The image file.
        long_side: If given, resize so that ``max(H, W) == long_side`` (with antialiasing; upscaling allowed).
        max_pixels: Refuse images whose width × height (read from the header, before decoding) exceeds this.

    Returns:
        A float32 tensor ``[3, H, W]`` in ``[0, 1]``.

    Raises:
        ImageError: The file is missing, not an image, corrupt or truncated, too large, or in an unsupported mode.
    """
    if long_side is not None and long_side < 1:
        raise ValueError(f"long_side must be a positive number of pixels, got {long_side}")
    with opened(path, max_pixels) as im:
        path = expanduser(path)
        if long_side is not None:
            check_resized(path, im.size, long_side, max_pixels)
            # Ask libjpeg for at least twice the target size: DCT scaling is a crude box filter, and the Lanczos
            # resize below needs that margin to antialias properly. No-op for non-JPEG formats.
            im.draft(None, target_size(*im.size, 2 * long_side))
        im.load()  # Decode now, so that every decoding error is reported by `opened` as the file's.
        im = _exif_upright(im, path)
        return _to_rgb_tensor(im, path, long_side)


def _exif_upright(im: Image.Image, path: Path) -> Image.Image:
    """Applies the EXIF orientation; a broken EXIF block is a warning, not a reason to refuse the photo."""
    try:
        # Checked first because exif_transpose copies the image even when there is nothing to turn, and the
        # image may be large.
        if im.getexif().get(_EXIF_ORIENTATION, 1) == 1:
            return im
        upright = ImageOps.exif_transpose(im)
    except Exception as exc:  # Corrupt EXIF comes in many shapes; the pixels themselves are fine.
        warnings.warn(f"ignored the unreadable EXIF orientation of '{path}': {exc}", stacklevel=3)
        return im
    return upright if upright is not None else im


_EXIF_ORIENTATION = 0x0112

# Modes whose samples do not fit in 8 bits: converting them with PIL's convert("RGB") would clip at 255.
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _to_rgb_tensor(im: Image.Image, path: Path, long_side: int | None) -> torch.Tensor:
    if long_side is not None and im.mode in (*_HIGH_BIT_MODES, "L"):
        im = _box_reduce(im, long_side)
    if im.mode in _HIGH_BIT_MODES:
        img = _high_bit_to_tensor(im)
        return img if long_side is None else resize_long_side(img, long_side)

    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    try:
        if has_alpha:
            # Composite on white *before* resizing: a transparent pixel's hidden colour (often black) would
            # otherwise bleed into its visible neighbours as a dark fringe.
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            rgb = Image.alpha_composite(white, rgba).convert("RGB")
        else:
            rgb = im if im.mode == "RGB" else im.convert("RGB")  # L, 1, P, CMYK, YCbCr. No copy of RGB.
    except ValueError as exc:  # A mode PIL cannot convert (e.g. LAB without a colour profile).
        raise ImageError(
            f"'{path}' uses colour mode {im.mode!r}, which cannot be converted to RGB here; save it as an RGB image"
        ) from exc

    if long_side is not None and max(rgb.size) != long_side:
        # reducing_gap: shrink by an integer factor first (fast, box filter), then Lanczos over the last
        # factor of >= 3 — indistinguishable from a full Lanczos and much faster on big photos.
        rgb = rgb.resize(target_size(*rgb.size, long_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    arr = np.array(rgb, dtype=np.uint8)  # [H, W, 3]; a copy, so the tensor owns writable memory.
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0).contiguous()  # [3, H, W]


def _box_reduce(im: Image.Image, long_side: int) -> Image.Image:
    """A single-channel image shrunk in its own mode to 3 x ``long_side`` (as ``reducing_gap=3.0`` does for RGB).

    The conversions that follow (16-bit to float32 and to three channels, 12 bytes a pixel; greyscale to RGB, 4 bytes
    a pixel) then hold about the output's pixels, not the file's: a 16000² 16-bit PNG of 500 KB would otherwise need
    several GB. A box filter only averages, so the value range that `_high_bit_to_tensor` reads the bit depth from
    is kept (Lanczos would overshoot); the final antialiased resize happens afterwards, as for any image.
    """
    target = target_size(*im.size, 3 * long_side)
    if target[0] * target[1] >= im.size[0] * im.size[1]:
        return im
    try:
        return im.resize(target, Image.Resampling.BOX)
    except ValueError:  # a Pillow without resampling in this mode (older ones for I;16): 32-bit integers have it
        return im.convert("I").resize(target, Image.Resampling.BOX)


def _high_bit_to_tensor(im: Image.Image) -> torch.Tensor:
    """16-bit, 32-bit integer and float single-channel images -> [3, H, W] in [0, 1]."""
    arr = np.array(im).astype(np.float32)  # [H, W]; float32 is exact for 16-bit values and half of float64.
    if im.mode.startswith("I;16"):
        arr /= 65535.0
    elif im.mode == "I":
        # 32-bit integers carry no bit depth. In practice they come from 16-bit sources (PGM, some TIFFs) or
        # hold 8-bit data: pick the smallest of those ranges that holds every value, else stretch min..max.
        top = arr.max(initial=0.0)
        if arr.min(initial=0.0) >= 0 and top <= 65535:
            arr /= 255.0 if top <= 255 else 65535.0
        else:
            arr = (arr - arr.min()) / max(arr.max() - arr.min(), 1.0)
    else:  # "F": float data; [0, 1] is kept as is, anything else is stretched to [0, 1].
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = arr.min(initial=0.0), arr.max(initial=0.0)
        if lo < 0.0 or hi > 1.0:
            arr = (arr - lo) / max(hi - lo, 1e-12)
    grey = torch.from_numpy(np.clip(arr, 0.0, 1.0, out=arr))  # [H, W]
    return grey.unsqueeze(0).expand(3, -1, -1).contiguous()  # [3, H, W]


def resize_long_side(img: torch.Tensor, long_side: int) -> torch.Tensor:
    """Resizes so that the longer side is ``long_side`` (antialiased bilinear; upscaling allowed).

    Args:
        img: ``[..., C, H, W]`` (usually ``[3, H, W]`` or ``[N, 3, H, W]``).
        long_side: The new size of the longer side, in pixels.

    Returns:
        The resized tensor, same leading dimensions and dtype.
    """
    if long_side < 1:
        raise ValueError(f"long_side must be a positive number of pixels, got {long_side}")
    height, width = img.shape[-2:]
    new_w, new_h = target_size(width, height, long_side)
    if (new_h, new_w) == (height, width):
        return img
    flat = img.reshape(-1, *img.shape[-3:])  # [B, C, H, W]: interpolate wants exactly one batch dimension.
    out = F.interpolate(flat.float(), size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    return out.to(img.dtype).reshape(*img.shape[:-2], new_h, new_w)


def pad_to(img: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pads ``[..., C, h, w]`` at the bottom and right to ``[..., C, height, width]``.

    Used to batch images of different aspect ratios into one ``[N, 3, H, W]`` tensor. Reflection keeps the
    padding's statistics close to the image's (zeros would add a black band that the style loss sees); where
    the padding is at least as large as the image side, reflection is impossible and the edge is replicated.

    Args:
        img: The image, ``[C, h, w]`` or ``[N, C, h, w]``.
        height: Target height (``>= h``).
        width: Target width (``>= w``).

    Returns:
        The padded image.
    """
    h, w = img.shape[-2:]
    if height < h or width < w:
        raise ValueError(f"pad_to cannot shrink: image is {h}x{w}, target {height}x{width}")
    out = img.reshape(-1, *img.shape[-3:])  # [B, C, h, w]: F.pad's reflect mode wants a batch dimension.
    pad_h, pad_w = height - h, width - w
    # One dimension at a time, so that each can fall back to replicate on its own.
    if pad_h:
        out = F.pad(out, (0, 0, 0, pad_h), mode="reflect" if pad_h < h else "replicate")
    if pad_w:
        out = F.pad(out, (0, pad_w, 0, 0), mode="reflect" if pad_w < w else "replicate")
    return out.reshape(*img.shape[:-2], height, width)


# --------------------------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------------------------


def _to_uint8_hwc(img: torch.Tensor) -> np.ndarray:
    """[3, H, W] (or [1, 3, H, W]) float in [0, 1] -> [H, W, 3] uint8; refuses NaN/inf."""
    img = img.detach()
    if img.dim() == 4 and img.shape[0] == 1:
        img = img[0]
    if img.dim() != 3 or img.shape[0] != 3:
        raise ValueError(f"expected an RGB image [3, H, W], got shape {tuple(img.shape)}")
    img = img.float().cpu()
    if not torch.isfinite(img).all():
        bad = int((~torch.isfinite(img)).sum())
        raise ImageError(
            f"the image contains {bad} NaN/inf values, so it was not written: the optimisation diverged; "
            "lower the learning rate or the loss weights, or use 32-bit precision"
        )
    arr = (img.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)  # [3, H, W]
    return arr.permute(1, 2, 0).contiguous().numpy()  # [H, W, 3]


def to_pil(img: torch.Tensor) -> Image.Image:
    """Converts ``[3, H, W]`` float in ``[0, 1]`` (clamped) to an 8-bit RGB PIL image; refuses NaN/inf."""
    return Image.fromarray(_to_uint8_hwc(img), mode="RGB")


def save_image(img: torch.Tensor, path: PathLike) -> Path:
    """Saves ``[3, H, W]`` float in ``[0, 1]`` (clamped) as an 8-bit RGB PNG, atomically.

    The file is PNG whatever its suffix (give it ``.png``). Parent folders are created. If anything fails, the
    previous file at ``path`` (if any) is left untouched and no temporary file remains.

    Args:
        img: The image; a leading batch dimension of 1 is accepted.
        path: Where to write.

    Returns:
        The path written.

    Raises:
        ImageError: The image holds NaN/inf values (nothing is written), or the write failed (full disk,
            permission denied, ...).
    """
    buffer = io.BytesIO()
    # Encode in memory first: an encoder error can then never leave a partial file, and the write below is
    # the same atomic mechanism that checkpoints and CSVs use.
    to_pil(img).save(buffer, format="PNG")
    path = expanduser(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (signals, pipes): loop until everything is out."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically: readers see the old file or the new one, never a partial one.

    The bytes go to a temporary file in the same folder (``os.replace`` is atomic only within one file
    system), are flushed to disk with ``fsync``, and the temporary file is then renamed over ``path``.
    Parent folders are created.

    Args:
        path: The destination.
        data: The complete file content.

    Raises:
        OutputError: The write failed (e.g. disk full, permission denied); the previous file is untouched and the
            temporary file removed. The original ``OSError`` is chained as ``__cause__``.
    """
    path = expanduser(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL on a random name instead of tempfile.mkstemp: mkstemp creates the file with mode 0600, which
        # would survive the rename; os.open(..., 0o666) lets the user's umask decide, as for any new file.
        # The name is cut so that the temporary name stays within the usual 255-byte file-name limit.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        while True:
            tmp = path.with_name(f".{path.name[:80]}.{secrets.token_hex(6)}.tmp")
            try:
                fd = os.open(tmp, flags, 0o666)
                break
            except FileExistsError:
                continue
        try:
            _write_all(fd, data)
            os.fsync(fd)  # The data must be on disk before the rename makes it visible under the real name.
        finally:
            os.close(fd)
        os.replace(tmp, path)
        tmp = None
    except BaseException as exc:
        # Any failure, including Ctrl-C in the middle of the write, removes the temporary file.
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if isinstance(exc, OSError):
            raise OutputError(_write_error_message(path, exc)) from exc
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Makes the rename itself durable (POSIX); best effort, as some systems cannot open folders."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_error_message(path: Path, exc: OSError) -> str:
    code = exc.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        problem = "no space left on the disk (or the disk quota is used up)"
        fix = "free some disk space or write to another disk (e.g. change the output folder)"
    elif code in (errno.EACCES, errno.EPERM):
        problem = "permission denied"
        fix = "choose an output folder you can write to, or fix its permissions"
    elif code == errno.EROFS:
        problem = "the file system is read-only"
        fix = "choose an output folder on a writable disk"
    else:
        problem = exc.strerror or str(exc)
        fix = "check that the folder exists, is writable and has free space"
    return f"could not write '{path}': {problem}; {fix}. Any previous version of the file was left untouched."
