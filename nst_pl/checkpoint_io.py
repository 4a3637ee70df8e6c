"""AtomicCheckpointIO: checkpoints written like the PNGs — temp file in the same folder, fsync, rename.

Why not Lightning's default (`TorchCheckpointIO` -> `_atomic_save`)? It writes through an fsspec transaction whose
temporary file is created by `tempfile.mkstemp()` in the *system* temp folder and then `shutil.move`d to the
destination. When that folder is on another file system than the run (a tmpfs /tmp, a scratch disk), the move is a
plain copy into `last.ckpt`: a run killed during the copy leaves a truncated `last.ckpt` over the good one, and nothing
is fsync'ed, so a power cut can leave an empty file. Here the bytes go to a hidden temporary file next to the
destination, are fsync'ed, and are renamed over it (`nst_pl.image_io.atomic_write_bytes`), so `last.ckpt` is always
either the previous complete checkpoint or the new complete one.
"""

from __future__ import annotations

import io
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import get_filesystem
from lightning_fabric.utilities.types import _PATH

from nst_pl.errors import OutputError
from nst_pl.image_io import atomic_write_bytes


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local writes are atomic and durable; remote URLs (s3://, …) keep Lightning's path."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        protocol = get_filesystem(path).protocol
        local = "file" in ((protocol,) if isinstance(protocol, str) else protocol)
        if storage_options is not None or not local:
            return super().save_checkpoint(checkpoint, path, storage_options)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # serialise fully in memory first: a pickling error writes nothing
        try:
            atomic_write_bytes(path, buffer.getvalue())
        except OutputError as err:  # its message names the file, the cause and the fix; say what the file was
            raise OutputError(f"checkpoint not saved: {err}") from err.__cause__
