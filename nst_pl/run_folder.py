"""The run's folder: every output folder probed before any work, without creating it (`check_writable`; also `-o`'s
folder, before torch is imported), and `version_<k>` claimed atomically (`claim_version`): two runs started at once
into one root get distinct folders.

Lightning's loggers pick `version_<k>` by listing the folder and taking the largest k plus one; two runs (fresh or
resumed) that list it at the same moment both take the same k and overwrite each other's images. Here the folder
is created with `os.mkdir`, which fails for all but one process: the others move on to k + 1.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

from nst_pl.errors import OutputError

# How to move the run's folder, for the messages of folders that cannot be written.
DEFAULT_ROOT_FIX = "a writable location with --trainer.default_root_dir DIR (or the logger's save_dir)"


def claim_version(logger) -> None:
    """Create the logger's next `version_<k>` folder atomically and pin the logger to it (local folders only)."""
    if getattr(logger, "_version", "") is not None or not hasattr(logger, "_get_next_version"):
        return  # a version chosen by the user, or a logger without versions
    root = Path(logger.root_dir) if getattr(logger, "root_dir", None) else None
    if root is None or "://" in str(root):
        return
    root.mkdir(parents=True, exist_ok=True)
    version = logger._get_next_version()
    for _ in range(10_000):
        try:
            os.mkdir(root / f"version_{version}")
        except FileExistsError:
            version += 1
            continue
        except OSError as err:
            raise OutputError(
                f"cannot create the run folder '{root / f'version_{version}'}': {err.strerror or err}; choose a "
                "writable location with --trainer.default_root_dir DIR"
            ) from None
        logger._version = version
        return
    raise OutputError(f"no free version_<k> folder in '{root}': clean it up or choose another default_root_dir")


def check_writable(folder: Path, what: str = "", fix: str = DEFAULT_ROOT_FIX) -> None:
    """Fail before the first step, not after an hour, when `folder` cannot be written: a file is written into the
    nearest existing folder at or above it (the one where `folder` would be created) and removed at once. Nothing is
    created. `what` names the folder in the message (default: "the output folder '<folder>'"), `fix` the option."""
    what = what or f"the output folder '{folder}'"
    existing = folder
    try:
        existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"'{existing}' is a file, not a folder")
        # One probe name per process: DDP ranks may check the same folder at the same time.
        probe = existing / f".write_test.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            # Some bytes, synced: an empty file needs no data block and is created even on a full disk.
            with open(probe, "wb") as f:
                f.write(b"\0" * 4096)
                f.flush()
                os.fsync(f.fileno())
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
    except OSError as err:
        full = err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1))
        where = f" in '{existing}'" if existing != folder and err.errno != errno.ENOTDIR else ""
        free = "Free some disk space there, or choose" if full else "Choose"
        raise OutputError(f"cannot write {what}: {err.strerror or err}{where}. {free} {fix}") from None
