"""Tests for nst_pl.image_io: every input trap we know of (formats, modes, sizes, names) and atomic saving."""

from __future__ import annotations

import errno
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, png_header_claiming
from PIL import Image

from nst_pl import image_io
from nst_pl.errors import ImageError, OutputError
from nst_pl.image_io import (
    IMAGE_EXTENSIONS,
    atomic_write_bytes,
    find_images,
    load_image,
    pad_to,
    resize_long_side,
    save_image,
    to_pil,
)


def noise(width: int = 32, height: int = 24, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def opened(path: Path) -> tuple[str, str]:
    """(format, mode) of a file as PIL sees it, closing the file again."""
    with Image.open(path) as im:
        return im.format, im.mode


def write(path: Path, image: Image.Image | None = None, **save_args) -> Path:
    (image or noise()).save(path, **save_args)
    return path


# ------------------------------------------------------------------------------------------------ find_images


def test_find_images_missing_path(tmp_path):
    with pytest.raises(ImageError, match=r"content image not found: '.*x\.jpg'"):
        find_images(tmp_path / "x.jpg")
    with pytest.raises(ImageError, match="style image not found"):
        find_images([tmp_path / "y.jpg"], what="style")


def test_find_images_empty_folder(tmp_path):
    with pytest.raises(ImageError) as info:
        find_images(tmp_path, what="style")
    message = str(info.value)
    assert "no style images" in message and str(tmp_path) in message and ".jpg" in message


def test_find_images_folder_sorted_skips_non_images_with_warning(tmp_path):
    write(tmp_path / "b.png")
    write(tmp_path / "a.JPG", format="JPEG")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".DS_Store").write_bytes(b"\0")  # hidden files and credits are skipped silently
    (tmp_path / "CREDITS.md").write_text("credits")
    (tmp_path / "sub").mkdir()
    with pytest.warns(UserWarning, match="notes.txt") as record:
        found = find_images(str(tmp_path))
    assert [p.name for p in found] == ["a.JPG", "b.png"]
    message = str(record[0].message)
    assert "sub/" in message and "CREDITS" not in message and "DS_Store" not in message


def _special_files(folder: Path) -> dict[str, str]:
    """A FIFO, a socket, a dangling link and a link loop, each named like an image: name -> expected reason."""
    import socket

    os.mkfifo(folder / "b.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "c.png"))
    sock.close()  # the socket file stays
    (folder / "d.png").symlink_to(folder / "gone.png")
    (folder / "e.png").symlink_to(folder / "e.png")
    return {"b.png": "named pipe", "c.png": "socket", "d.png": "dangling", "e.png": "loop"}


def test_find_images_skips_special_files_and_broken_links_with_a_warning(tmp_path):
    write(tmp_path / "a.png")
    (tmp_path / "f.png").symlink_to(tmp_path / "a.png")  # a link to a regular file is read
    reasons = _special_files(tmp_path)
    with pytest.warns(UserWarning) as record:
        found = find_images(tmp_path)
    assert [p.name for p in found] == ["a.png", "f.png"]
    message = " ".join(str(w.message) for w in record)
    for name, reason in reasons.items():
        assert f"{name} (" in message and reason in message, (name, message)


def test_a_special_file_or_broken_link_named_explicitly_is_a_clear_error(tmp_path):
    reasons = _special_files(tmp_path)
    for name, reason in reasons.items():
        with pytest.raises(ImageError, match=reason):
            find_images(tmp_path / name)
        with pytest.raises(ImageError, match=reason):
            load_image(tmp_path / name)  # never opens the FIFO (that would wait forever)


def test_find_images_sample_folders_load_without_warnings(recwarn):
    for folder, what in (("images", "content"), ("style", "style")):
        for path in find_images(REPO / folder, what=what):
            img = load_image(path)
            assert img.shape[0] == 3 and max(img.shape[1:]) <= 512
    assert not [w for w in recwarn.list if issubclass(w.category, UserWarning)]


def test_find_images_list_keeps_order_and_duplicates(tmp_path):
    a, b = write(tmp_path / "a.png"), write(tmp_path / "b.png")
    assert find_images([b, str(a), b]) == [b, a, b]
    assert find_images(a) == [a]
    with pytest.raises(ImageError, match="no content images given"):
        find_images([])


def test_image_extensions_lowercase():
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"} == set(IMAGE_EXTENSIONS)


# ------------------------------------------------------------------------------------------------ broken inputs


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(200))  # a JPEG signature followed by garbage
    with pytest.raises(ImageError, match=r"corrupt\.jpg' is not a readable image"):
        load_image(path)


def test_truncated_jpeg(tmp_path):
    full = write(tmp_path / "full.jpg", noise(64, 64), quality=95)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ImageError, match=r"truncated\.jpg' is not a readable image"):
        load_image(truncated)


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello, I am text")
    with pytest.raises(ImageError, match=r"notes\.png' is not a readable image"):
        load_image(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)


# ------------------------------------------------------------------------------------------------ formats and modes


def test_webp_named_jpg_loads(tmp_path):
    path = write(tmp_path / "really_webp.jpg", noise(30, 20), format="WEBP", lossless=True)
    assert opened(path)[0] == "WEBP"
    img = load_image(path)
    expected = torch.from_numpy(np.array(noise(30, 20))).permute(2, 0, 1).float() / 255
    assert img.shape == (3, 20, 30) and img.dtype == torch.float32
    assert torch.allclose(img, expected, atol=1 / 255)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("1", "PNG"),
        ("L", "PNG"),
        ("LA", "PNG"),
        ("P", "GIF"),
        ("RGB", "BMP"),
        ("RGBA", "PNG"),
        ("CMYK", "TIFF"),
        ("I;16", "PNG"),
        ("I", "TIFF"),
        ("F", "TIFF"),
    ],
)
def test_every_mode_gives_rgb_float(tmp_path, mode, fmt):
    path = tmp_path / f"img.{fmt.lower()}"
    noise(20, 10).convert(mode).save(path, format=fmt)
    img = load_image(path)
    assert img.shape == (3, 10, 20) and img.dtype == torch.float32
    assert 0.0 <= img.min() and img.max() <= 1.0


def test_grayscale(tmp_path):
    path = write(tmp_path / "grey.png", Image.new("L", (8, 6), 128))
    img = load_image(path)
    assert img.shape == (3, 6, 8)
    assert torch.allclose(img, torch.full_like(img, 128 / 255))


def test_palette_with_transparency(tmp_path):
    palette_image = Image.new("P", (4, 4), 0)
    palette_image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))  # index 0 red, index 1 blue
    palette_image.putpixel((0, 0), 1)
    path = write(tmp_path / "palette.png", palette_image, transparency=1)  # blue is the transparent entry
    img = load_image(path)
    assert torch.allclose(img[:, 0, 0], torch.ones(3))  # transparent -> white, not blue
    assert torch.allclose(img[:, 1, 1], torch.tensor([1.0, 0.0, 0.0]))


def test_rgba_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (3, 1))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black
    rgba.putpixel((1, 0), (255, 0, 0, 255))  # opaque red
    rgba.putpixel((2, 0), (0, 0, 0, 128))  # half-transparent black -> mid grey
    img = load_image(write(tmp_path / "rgba.png", rgba))
    assert torch.allclose(img[:, 0, 0], torch.ones(3))
    assert torch.allclose(img[:, 0, 1], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(img[:, 0, 2], torch.full((3,), 127 / 255), atol=2 / 255)


def test_cmyk(tmp_path):
    path = write(tmp_path / "cmyk.jpg", Image.new("CMYK", (16, 16), (0, 255, 255, 0)), quality=100)
    img = load_image(path)
    assert img.shape == (3, 16, 16)
    assert torch.allclose(img.mean((1, 2)), torch.tensor([1.0, 0.0, 0.0]), atol=0.03)  # no cyan/yellow ink = red


def test_16_bit_png_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    path = write(tmp_path / "deep.png", Image.fromarray(values))
    assert opened(path)[1] == "I;16"
    img = load_image(path)
    assert torch.allclose(img[:, 0, 1], torch.full((3,), 0.5), atol=1e-3)  # not 1.0, as clipping at 255 would give
    assert img[:, 0, 0].eq(0).all() and img[:, 0, 2].eq(1).all()


def test_exif_rotated_jpeg_is_upright(tmp_path):
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 8, 8))  # red marker at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: the viewer must rotate 90° clockwise
    path = write(tmp_path / "rotated.jpg", stored, exif=exif, quality=95)
    img = load_image(path)
    assert img.shape == (3, 40, 20)  # portrait once upright
    # 90° clockwise moves the stored top-left corner to the top-right.
    assert img[0, :8, -8:].mean() > 0.9 and img[2, :8, -8:].mean() < 0.1
    assert img[0, :8, :8].mean() < 0.1


# ------------------------------------------------------------------------------------------------ size


def giant_jpeg(width: int, height: int) -> bytes:
    """A *valid* grey baseline JPEG of any size, ~2 bits per 8x8 block on disk (16000² -> 1 MB).

    Huffman tables with a single 1-bit code each (DC difference 0, end-of-block) make every block two zero
    bits: the entropy-coded data is just zero bytes. Encoding such an image with PIL would need its full size
    in memory, which is what the test must avoid.
    """

    def segment(marker: int, payload: bytes) -> bytes:
        return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload

    one_code = bytes([1] + [0] * 15)  # one code of length 1
    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    return (
        b"\xff\xd8"
        + segment(0xDB, b"\x00" + bytes([1] * 64))  # quantisation table
        + segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")  # 1 component
        + segment(0xC4, b"\x00" + one_code + b"\x00" + b"\x10" + one_code + b"\x00")  # DC and AC tables
        + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")  # start of scan
        + bytes((2 * blocks + 7) // 8)
        + b"\xff\xd9"
    )


def test_enormous_jpeg_downscaled_without_full_decode(tmp_path, monkeypatch):
    # 16000² = 256 MP: above PIL's own bomb limit (~179 MP, which would raise), below our default max_pixels.
    path = tmp_path / "huge.jpg"
    path.write_bytes(giant_jpeg(16000, 16000))
    decoded_sizes = []
    original_load = Image.Image.load

    def spy_load(self):
        decoded_sizes.append(self.size)
        return original_load(self)

    monkeypatch.setattr(Image.Image, "load", spy_load)
    pil_limit = Image.MAX_IMAGE_PIXELS
    start = time.perf_counter()
    img = load_image(path, long_side=256)
    assert time.perf_counter() - start < 5.0  # a full decode (256 MB grey, 768 MB RGB) would be far slower
    assert img.shape == (3, 256, 256)
    assert max(max(size) for size in decoded_sizes) <= 16000 // 8 + 1  # libjpeg decoded at 1/8 scale
    assert Image.MAX_IMAGE_PIXELS == pil_limit  # PIL's global guard restored


@pytest.mark.parametrize("mode", ["I;16", "I", "L"])
def test_deep_or_grey_images_are_shrunk_before_their_float_or_rgb_copies(mode, tmp_path, monkeypatch):
    """A 16000² 16-bit PNG of 500 KB needed several GB: a float32 copy, three channels of it, then the resize. Its
    pixels are now box-reduced in their own mode first, so the copies hold about the output's pixels (a 2400x1600
    stand-in here; numpy's allocations are what tracemalloc sees, PIL's conversions are spied on)."""
    import tracemalloc

    converted = []
    original_convert = Image.Image.convert

    def convert(self, *args, **kwargs):
        converted.append(self.size)
        return original_convert(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", convert)

    yy, xx = np.mgrid[0:1600, 0:2400]
    top = {"I;16": 65535, "I": 255, "L": 255}[mode]  # "I" holding 8-bit data: its range must survive the shrink
    values = (xx / 2399 * 0.6 + yy / 1599 * 0.4) * top
    if mode == "I;16":
        path = write(tmp_path / "deep.png", Image.fromarray(values.astype(np.uint16)))
    elif mode == "I":
        path = write(tmp_path / "deep.tif", Image.fromarray(values.astype(np.int32), "I"))
    else:
        path = write(tmp_path / "grey.png", Image.fromarray(values.astype(np.uint8)))
    assert opened(path)[1] == mode
    tracemalloc.start()
    try:
        img = load_image(path, long_side=60)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert img.shape == (3, 40, 60)
    assert peak < 2400 * 1600 / 4, peak  # well below even one byte per input pixel (the 16-bit float path: 6)
    assert all(w * h <= 180 * 120 for w, h in converted), converted  # greyscale to RGB: 4 bytes a pixel, after
    expected = torch.from_numpy(values[::40, ::40] / top).float()  # a smooth ramp: subsampling is the answer
    assert (img[0] - expected).abs().max() < 0.02
    assert torch.equal(img[0], img[2])


def test_enormous_image_refused_above_max_pixels(tmp_path):
    jpeg = tmp_path / "huge.jpg"
    jpeg.write_bytes(giant_jpeg(16000, 16000))
    with pytest.raises(ImageError, match=r"16000x16000.*limit.*downscale it first"):
        load_image(jpeg, long_side=256, max_pixels=100_000_000)

    png = tmp_path / "bomb.png"
    png.write_bytes(png_header_claiming(100_000, 100_000))  # 10 gigapixels claimed, 100 bytes on disk
    start = time.perf_counter()
    with pytest.raises(ImageError, match=r"100000x100000.*limit"):
        load_image(png, long_side=512)
    assert time.perf_counter() - start < 1.0
    assert Image.MAX_IMAGE_PIXELS is not None  # PIL's own guard is back on after a refusal too


def test_load_long_side(tmp_path):
    landscape = write(tmp_path / "landscape.png", noise(300, 200))
    portrait = write(tmp_path / "portrait.jpg", noise(100, 250))
    assert load_image(landscape, 150).shape == (3, 100, 150)
    assert load_image(landscape, 600).shape == (3, 400, 600)  # upscaling allowed
    assert load_image(portrait, 100).shape == (3, 100, 40)
    assert load_image(landscape, 300).shape == (3, 200, 300)
    with pytest.raises(ValueError):
        load_image(landscape, 0)


def test_resize_long_side_tensor():
    img = torch.rand(2, 3, 60, 90)
    assert resize_long_side(img, 30).shape == (2, 3, 20, 30)
    assert resize_long_side(img[0], 180).shape == (3, 120, 180)
    flat = torch.full((3, 50, 20), 0.25)
    assert torch.allclose(resize_long_side(flat, 10), torch.full((3, 10, 4), 0.25))
    assert resize_long_side(img, 90) is img


def test_pad_to_shapes():
    img = torch.rand(3, 10, 20)
    padded = pad_to(img, 16, 24)
    assert padded.shape == (3, 16, 24)
    assert torch.equal(padded[:, :10, :20], img)
    assert torch.equal(padded[:, 10, :20], img[:, 8, :])  # reflection, not zeros
    small = torch.rand(3, 4, 5)
    assert pad_to(small, 20, 30).shape == (3, 20, 30)  # pad larger than the image: replicate fallback
    assert pad_to(torch.rand(2, 3, 4, 5), 6, 5).shape == (2, 3, 6, 5)
    assert pad_to(img, 10, 20).shape == (3, 10, 20)
    with pytest.raises(ValueError):
        pad_to(img, 8, 20)


# ------------------------------------------------------------------------------------------------ saving


def test_save_round_trip_creates_parents(tmp_path):
    img = torch.rand(3, 12, 17)
    path = save_image(img, tmp_path / "a" / "b" / "out.png")
    assert path.is_file() and opened(path)[0] == "PNG"
    assert torch.allclose(load_image(path), (img * 255).round() / 255, atol=1e-6)
    assert save_image(img.unsqueeze(0), path) == path  # [1, 3, H, W] accepted
    assert to_pil(img).size == (17, 12)


def test_save_image_is_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    path.write_bytes(b"previous content")

    def fail_mid_write(fd, data):
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(image_io, "_write_all", fail_mid_write)
    with pytest.raises(OutputError, match="could not write"):
        save_image(torch.rand(3, 8, 8), path)
    assert path.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temporary file left


@pytest.mark.parametrize(("code", "words"), [(errno.ENOSPC, ("disk", "space")), (errno.EACCES, ("permission",))])
def test_save_image_write_errors_are_clear(tmp_path, monkeypatch, code, words):
    def fail(fd, data):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(image_io, "_write_all", fail)
    path = tmp_path / "out.png"
    with pytest.raises(OutputError) as info:
        save_image(torch.rand(3, 8, 8), path)
    message = str(info.value).lower()
    assert str(path).lower() in message and any(word in message for word in words)
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == code
    assert list(tmp_path.iterdir()) == []


def test_nan_image_refused_and_nothing_written(tmp_path):
    img = torch.rand(3, 8, 8)
    img[1, 2, 3] = float("nan")
    with pytest.raises(ImageError, match="NaN"):
        save_image(img, tmp_path / "nan.png")
    img[1, 2, 3] = float("inf")
    with pytest.raises(ImageError, match="NaN/inf"):
        save_image(img, tmp_path / "nan.png")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_bytes_replaces(tmp_path):
    path = tmp_path / "sub" / "data.csv"
    atomic_write_bytes(path, b"one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["data.csv"]


@pytest.mark.parametrize("name", ["with space.png", "Ünïcødé 画.png", "a;b $(x) & `y`.png", 'it\'s "q".png'])
def test_awkward_file_names_round_trip(tmp_path, name):
    original = noise(9, 7)
    source = write(tmp_path / name, original)
    img = load_image(source)
    assert find_images(tmp_path) == [source]
    saved = save_image(img, tmp_path / "out" / name)
    assert saved.name == name
    assert torch.equal(load_image(saved), img)
