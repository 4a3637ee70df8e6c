"""Image files before any pixel is needed, without torch: which files the inputs are (`find_images`), and opening
one safely (`opened`: the file's kind and pixel count checked first, and PIL's many exceptions for a broken file
turned into one ImageError that names it).

The checks before a run (early_checks.py) decode every input here before torch and Lightning are imported, so that a
missing, corrupt or enormous image is refused in a second; image_io.py builds the loading of pixels on the same
functions, so each input trap has one message.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from PIL import Image

from nst_pl.errors import ConfigError, ImageError, NSTError

# Extensions that mark a file in a *folder* as an image (compared lowercase). A file named explicitly is
# loaded whatever its extension: the format is detected from the content, not the name.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")

PathLike = str | os.PathLike

# --------------------------------------------------------------------------------------------------------------
# Finding input files
# --------------------------------------------------------------------------------------------------------------


def expanduser(path: PathLike) -> Path:
    """`~/x` -> the home folder, like a shell; a name that merely starts with `~` (`~draft.png`, or `~user` for a user
    that does not exist) stays literal, as in bash, instead of Python's "Could not determine home directory"."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return Path(path)


def find_images(spec: PathLike | Sequence[PathLike], what: str = "content") -> list[Path]:
    """Turns a file, a folder or a list of files/folders into a list of image paths.

    Args:
        spec: One image file, one folder (its images are taken non-recursively, sorted by name), or a sequence
            of files and folders (their order is kept, and so are duplicates: pair naming makes names unique
            later, and a user may want the same photo twice, e.g. with two styles).
        what: What the images are for ("content" or "style"); used in messages.

    Returns:
        The image paths, in order.

    Raises:
        ImageError: A path does not exist, is neither a file nor a folder, a folder holds no image, or the
            spec is empty.
    """
    items: list[PathLike] = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not items:
        raise ImageError(f"no {what} images given: pass an image file, a folder of images, or a list of them")

    found: list[Path] = []
    for item in items:
        if not str(item).strip():  # Path("") is the current folder: an unset shell variable would read all of it
            raise ImageError(
                f"an empty path was given for the {what} images (data.{what}, e.g. an unset shell variable); pass an "
                "image file, a folder of images, or a list of them"
            )
        path = expanduser(item)
        if path.is_dir():
            found.extend(_images_in_folder(path, what))
        elif path.is_file():
            # An explicitly named file is taken as is: the loader detects the format from the content, so an
            # unusual extension (.jfif, none at all) is not a reason to refuse it.
            found.append(path)
        elif path.exists() or path.is_symlink():
            raise ImageError(
                f"{what} image '{path}' is {not_regular(path)}, not an image file; pass an image file or a folder"
            )
        else:
            raise ImageError(
                f"{what} image not found: '{path}' (check the spelling; relative paths are resolved from the "
                f"current folder '{Path.cwd()}')"
            )
    return found


def not_regular(path: Path) -> str:
    """'' for a regular file (after following symbolic links), else what it is, for a message."""
    try:
        mode = path.stat().st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "a symbolic link loop"
        if path.is_symlink():
            return f"a dangling symbolic link (to '{os.readlink(path)}', which does not exist)"
        return f"unreadable ({err.strerror or err})"
    if stat.S_ISREG(mode):
        return ""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


# Stems of documentation files that a folder of images may legitimately hold; skipped without a warning.
_DOC_STEMS = frozenset({"README", "CREDITS", "LICENSE", "LICENCE", "COPYING", "NOTICE", "AUTHORS", "SOURCES"})


def _images_in_folder(folder: Path, what: str) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name; warns about the files it skips."""
    images: list[Path] = []
    skipped: list[str] = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        # Hidden files are never meant as inputs, and some of them look like images but are not
        # (macOS writes "._photo.jpg" resource forks beside the real photos on foreign file systems).
        # Documentation beside the images (the sample folders' CREDITS.md) is expected there: no warning.
        if entry.name.startswith(".") or entry.stem.upper() in _DOC_STEMS:
            continue
        # Only regular files are read (after following links): a FIFO named b.png would block the run forever, and
        # a dangling or looping link is not something the user asked for. Each is skipped, saying what it is.
        kind = not_regular(entry)
        if kind == "a folder":
            skipped.append(f"{entry.name}/ (sub-folders are not searched)")
        elif kind:
            skipped.append(f"{entry.name} ({kind})")
        elif entry.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(entry)
        else:
            skipped.append(entry.name)
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} in {what} folder '{folder}' "
            f"that are not image files: {', '.join(skipped)}",
            stacklevel=3,
        )
    if not images:
        raise ImageError(
            f"no {what} images in folder '{folder}': it holds no file ending in {', '.join(IMAGE_EXTENSIONS)}; "
            "put images there or pass the image files themselves"
        )
    return images


# --------------------------------------------------------------------------------------------------------------
# Opening one file
# --------------------------------------------------------------------------------------------------------------

# PIL's process-wide bomb guard (~89 MP) would make our documented `max_pixels` (300 MP) unreachable: it is switched
# off only while one of our loads runs (our check reads the header first), reference-counted for concurrent loads.
_pil_guard_lock = threading.Lock()
_pil_guard_users = 0
_pil_guard_saved: int | None = None


@contextlib.contextmanager
def _pil_bomb_guard_replaced() -> Iterator[None]:
    global _pil_guard_users, _pil_guard_saved
    with _pil_guard_lock:
        if _pil_guard_users == 0:
            _pil_guard_saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _pil_guard_users += 1
    try:
        yield
    finally:
        with _pil_guard_lock:
            _pil_guard_users -= 1
            if _pil_guard_users == 0:
                Image.MAX_IMAGE_PIXELS = _pil_guard_saved


def _unreadable(path: Path, reason: object) -> ImageError:
    return ImageError(
        f"'{path}' is not a readable image ({reason}); check that it is a complete image file "
        "(JPEG, PNG, WEBP, BMP, TIFF, GIF) — re-export or re-download it"
    )


def too_large_for_memory(path: Path) -> ImageError:
    return ImageError(
        f"'{path}' is too large to decode in the available memory; downscale it first (e.g. to 4000 px on the long "
        "side), or lower data.max_pixels to refuse such files before decoding"
    )


def target_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(width, height) scaled so that the longer side is exactly ``long_side`` (the other at least 1)."""
    scale = long_side / max(width, height)
    if width >= height:
        return long_side, max(1, round(height * scale))
    return max(1, round(width * scale)), long_side


def check_resized(path: Path, size: tuple[int, int], long_side: int, max_pixels: int, option: str = "") -> None:
    """The image of `size` = (width, height) resized to `long_side` is bounded by max_pixels too: an enormous
    `data.image_size` must not fail in the allocator. `option` names the size option when it is known."""
    width, height = target_size(*size, long_side)
    if width * height <= max_pixels:
        return
    message = (
        f"'{path}' ({size[0]}x{size[1]}) resized to a long side of {long_side} px would be {width}x{height} = "
        f"{width * height / 1e6:.1f} megapixels, above data.max_pixels={max_pixels:,}; "
    )
    if option:
        raise ConfigError(f"data.{option} {long_side}: {message}choose a smaller data.{option} (e.g. 512)")
    raise ImageError(f"{message}choose a smaller data.image_size (or data.style_size)")


@contextlib.contextmanager
def opened(path: PathLike, max_pixels: int) -> Iterator[Image.Image]:
    """The image file, open (its header read, its pixel count within `max_pixels`); any failure to read or decode it
    inside the block is an ImageError that names the file, says what is wrong and how to fix it."""
    path = expanduser(path)
    if path.is_dir():
        raise ImageError(f"'{path}' is a folder, not an image file; pass one of the images inside it")
    if not path.exists() and not path.is_symlink():
        raise ImageError(f"image not found: '{path}' (check the spelling and the current folder '{Path.cwd()}')")
    kind = not_regular(path)
    if kind:  # never open a FIFO or a device: reading it may wait forever
        raise ImageError(f"'{path}' is {kind}, not an image file; pass a regular image file")

    with _pil_bomb_guard_replaced():
        try:
            with Image.open(path) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise ImageError(
                        f"'{path}' is {width}x{height} = {width * height / 1e6:.1f} megapixels, above the limit of "
                        f"max_pixels={max_pixels:,} pixels; downscale it first (e.g. to 4000 px on the long side) "
                        "or, if you trust the file and have the memory, raise data.max_pixels"
                    )
                yield im
        except NSTError:
            raise
        except PermissionError as exc:
            raise ImageError(f"cannot read '{path}': permission denied; check the file's permissions") from exc
        except Image.DecompressionBombError as exc:
            # Only reachable if another part of the program re-enabled PIL's guard meanwhile; report it alike.
            raise ImageError(
                f"'{path}' is too large to load safely ({exc}); downscale it first, e.g. to 4000 px on the long side"
            ) from exc
        except MemoryError as exc:
            raise too_large_for_memory(path) from exc
        except RuntimeError as exc:  # torch's allocator: "DefaultCPUAllocator: can't allocate memory"
            if "alloc" not in str(exc).lower():
                raise
            raise too_large_for_memory(path) from exc
        # PIL reports broken files through many exception types, depending on the format and the damage:
        # UnidentifiedImageError/OSError (not an image, truncated), SyntaxError (broken PNG chunk), and
        # ValueError, EOFError, IndexError, KeyError, TypeError, struct.error, zlib.error (bad headers).
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError) as exc:
            raise _unreadable(path, exc) from exc
        except (struct.error, zlib.error) as exc:
            raise _unreadable(path, f"{type(exc).__name__}: {exc}") from exc


def check_decodes(path: PathLike, max_pixels: int) -> tuple[int, int]:
    """Decode the file cheaply (a JPEG at 1/8 scale, which still reads every byte), so that a missing, truncated or
    corrupt image is refused before a run starts; its (width, height)."""
    with opened(path, max_pixels) as im:
        size = im.size
        im.draft(None, (max(1, size[0] // 8), max(1, size[1] // 8)))
        im.load()
    return size
