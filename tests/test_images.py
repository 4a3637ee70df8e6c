"""Tests for nst_pl.images: every input trap we know of, atomic saving, colour utilities, naming."""

from __future__ import annotations

import errno
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nst_pl.errors import OutputError
from nst_pl import images
from nst_pl.images import (
    IMAGE_EXTENSIONS,
    ImageError,
    atomic_write_bytes,
    find_images,
    load_image,
    match_color,
    pad_to,
    pair_names,
    resize_long_side,
    rgb_to_yiq,
    save_image,
    to_pil,
    transfer_luminance,
    yiq_to_rgb,
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


def test_find_images_sample_folders_load_without_warnings(recwarn):
    repo = Path(__file__).resolve().parent.parent
    for folder, what in (("images", "content"), ("style", "style")):
        for path in find_images(repo / folder, what=what):
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
    [("1", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("P", "GIF"), ("RGB", "BMP"), ("RGBA", "PNG"),
     ("CMYK", "TIFF"), ("I;16", "PNG"), ("I", "TIFF"), ("F", "TIFF")],
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


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims an enormous size (a classic decompression bomb probe)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


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

    monkeypatch.setattr(images, "_write_all", fail_mid_write)
    with pytest.raises(OutputError, match="could not write"):
        save_image(torch.rand(3, 8, 8), path)
    assert path.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temporary file left


@pytest.mark.parametrize(
    ("code", "words"), [(errno.ENOSPC, ("disk", "space")), (errno.EACCES, ("permission",))]
)
def test_save_image_write_errors_are_clear(tmp_path, monkeypatch, code, words):
    def fail(fd, data):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(images, "_write_all", fail)
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


@pytest.mark.parametrize("name", ["with space.png", "Ünïcødé 画.png", "a;b $(x) & `y`.png", "it's \"q\".png"])
def test_awkward_file_names_round_trip(tmp_path, name):
    original = noise(9, 7)
    source = write(tmp_path / name, original)
    img = load_image(source)
    assert find_images(tmp_path) == [source]
    saved = save_image(img, tmp_path / "out" / name)
    assert saved.name == name
    assert torch.equal(load_image(saved), img)


# ------------------------------------------------------------------------------------------------ naming


def test_pair_names_sanitised_dedup_stable():
    contents = [Path(p) for p in ("x/a.jpg", "y/a.png", "a;b $(x) & `y`.jpg", "Ünïcødé 画.png", "A.jpg")]
    styles = [[Path("s/starry night.jpg")]] * 2 + [[Path("m.jpg"), Path("n/o.png")]] * 2 + [[Path("starry_night")]]
    names = pair_names(contents, styles)
    assert names == [
        "a__starry_night",
        "a__starry_night-2",
        "a_b_x_y__m+o",
        "Ünïcødé_画__m+o",
        "A__starry_night-3",  # case-insensitive file systems would merge it with the first
    ]
    assert pair_names(contents, styles) == names  # stable
    assert len({n.casefold() for n in names}) == len(names)
    assert all("/" not in n and " " not in n and "$" not in n for n in names)


def test_pair_names_suffix_never_steals_a_later_name():
    names = pair_names([Path("a.jpg")] * 3, [[Path("s-2.jpg")], [Path("s.jpg")], [Path("s.jpg")]])
    assert names == ["a__s-2", "a__s", "a__s-3"]
    bases = pair_names([Path("a")] * 3 + [Path("b")], [[Path("s")]] * 3 + [[Path("s")]])
    assert bases == ["a__s", "a__s-2", "a__s-3", "b__s"]
    tricky = pair_names([Path("a"), Path("a"), Path("a")], [[Path("s")], [Path("s")], [Path("s-2")]])
    assert tricky == ["a__s", "a__s-3", "a__s-2"]
    with pytest.raises(ValueError):
        pair_names([Path("a")], [])


# ------------------------------------------------------------------------------------------------ colour


def test_yiq_round_trip():
    img = torch.rand(2, 3, 5, 7)
    assert torch.allclose(yiq_to_rgb(rgb_to_yiq(img)), img, atol=1e-6)
    grey = torch.full((3, 2, 2), 0.4)
    yiq = rgb_to_yiq(grey)
    assert torch.allclose(yiq[0], torch.full((2, 2), 0.4)) and yiq[1:].abs().max() < 1e-6


def test_transfer_luminance_keeps_content_chroma_and_output_luma():
    torch.manual_seed(0)
    # Mid-range values, so that the recombined image stays inside [0, 1] and the clamp changes nothing.
    output = 0.35 + 0.3 * torch.rand(2, 3, 16, 16)
    content = 0.45 + 0.1 * torch.rand(2, 3, 16, 16)
    result = transfer_luminance(output, content)
    assert result.shape == output.shape
    assert 0 <= result.min() and result.max() <= 1
    assert torch.allclose(rgb_to_yiq(result)[:, 1:], rgb_to_yiq(content)[:, 1:], atol=1e-5)
    assert torch.allclose(rgb_to_yiq(result)[:, 0], rgb_to_yiq(output)[:, 0], atol=1e-5)
    assert transfer_luminance(output[0], content[0]).shape == (3, 16, 16)


def coloured(seed: int, n: int, size: tuple[int, int]) -> torch.Tensor:
    """Random images with correlated channels and a colour cast: a real 3x3 covariance to match."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, *size, generator=g)
    mixing = torch.rand(3, 3, generator=g) * 0.5 + torch.eye(3) * 0.5
    mixed = torch.einsum("ij,njhw->nihw", mixing / mixing.sum(1, keepdim=True), base)
    cast = torch.rand(n, 3, 1, 1, generator=g) * 0.3
    return (0.15 + 0.7 * mixed * 0.8 + cast * 0.5).clamp(0, 1)


@pytest.mark.parametrize("batched", [True, False])
def test_match_color_matches_means_and_stds(batched):
    output = coloured(1, 2, (32, 40))
    reference = coloured(2, 2, (24, 20))  # different size from the output
    if not batched:
        output, reference = output[0], reference[0]
    result = match_color(output, reference)
    assert result.shape == output.shape and result.dtype == output.dtype
    dims = (-2, -1)
    assert torch.allclose(result.mean(dims), reference.mean(dims), atol=0.02)
    assert torch.allclose(result.std(dims), reference.std(dims), atol=0.02)
    assert not torch.allclose(output.mean(dims), reference.mean(dims), atol=0.02)  # the test has teeth


def test_match_color_flat_and_broadcast_reference():
    flat = torch.full((2, 3, 8, 8), 0.5)
    reference = coloured(3, 1, (8, 8))
    result = match_color(flat, reference)  # a flat image has a singular covariance: no NaN, just the mean
    assert torch.isfinite(result).all()
    assert torch.allclose(result.mean((-2, -1)), reference.mean((-2, -1)).expand(2, 3), atol=1e-3)
    assert match_color(flat, reference[0]).shape == flat.shape
