"""Make the README picture (docs/results.jpg): the default recipe on every sample pair, offline VGG16.

    python bench/results_sheet.py            # ~15 min on 2 CPU cores

Runs `nst-pl fit --config vgg19` at 256 px for 300 steps (100 each at 128 and 181 px, then 256 px)
with the offline VGG16 (../shared), then lays out one row per pair: photo, painting, result at the last step.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OFFLINE_VGG16, REPO, row_sheet  # noqa: E402

from nst_pl.data import PairDataModule  # noqa: E402

COMMAND = [
    "--config",
    "nst_pl/configs/vgg19.yaml",
    "--data.image_size",
    "256",
    "--trainer.max_steps",
    "300",
    "--model.scales",
    "[128, 181]",
    "--model.scale_steps",
    "[100, 100]",
    "--model.extractor",
    "nst_pl.extractors.VGG16",
    "--model.extractor.init_args.weights",
    str(OFFLINE_VGG16),
    "--model.extractor.init_args.normalization",
    "caffe",
]


def main() -> None:
    if not OFFLINE_VGG16.exists():
        sys.exit(f"needs the offline VGG16 weights at {OFFLINE_VGG16} (see README, 'Offline weights')")
    pairs = PairDataModule(content=str(REPO / "images"), style=str(REPO / "style")).pairs  # the run's pairs and names
    with tempfile.TemporaryDirectory() as root:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "nst_pl.cli",
                "fit",
                *COMMAND,
                "--trainer.default_root_dir",
                root,
                "--trainer.enable_progress_bar",
                "false",
            ],
            cwd=REPO,
            check=True,
        )
        rows = []
        for pair in pairs:
            last = sorted(Path(root).glob(f"**/images/{pair.name}/step_*.png"))[-1]
            rows.append([Image.open(p).convert("RGB") for p in (pair.content, pair.styles[0], last)])
    out = REPO / "docs" / "results.jpg"
    row_sheet(rows, out)
    print(f"wrote {out} ({len(rows)} pairs)")


if __name__ == "__main__":
    main()
