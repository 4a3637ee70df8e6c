"""Make the README picture (docs/results.jpg): the default recipe on every sample pair, offline VGG16.

    python bench/results_sheet.py            # ~5 min on 2 quiet CPU cores

Runs the default recipe (`nst-pl fit --config vgg19`) at 256 px as `bench/quality.py` does: its coarse scales below
256 px (25 steps at 128 px, 25 at 181), then 30 steps at 256 px (under a third of the classic loop's time: README,
"Quality"), with the offline VGG16 (../shared); then lays out one row per pair: photo, painting, result at the last
step (docs/results.jpg); and the trade-off knob
`model.style_strength` at 0.25, 0.5, 0.75, 1 and 1.5 on the first pair (docs/style_strength.jpg), which is a
post-process of the same result.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OFFLINE_VGG16, REPO, row_sheet  # noqa: E402
from quality import default_recipe  # noqa: E402

from nst_pl.data import PairDataModule  # noqa: E402
from nst_pl.image_io import to_pil  # noqa: E402
from nst_pl.module import towards_photo  # noqa: E402

STRENGTHS = (0.25, 0.5, 0.75, 1.0, 1.5)
SIZE, FULL_STEPS = 256, 30
SCHEDULE = default_recipe(SIZE)  # the config's coarse scales below SIZE


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)


COMMAND = [
    "--config",
    "nst_pl/configs/vgg19.yaml",
    "--data.image_size",
    str(SIZE),
    "--trainer.max_steps",
    str(sum(SCHEDULE["scale_steps"]) + FULL_STEPS),
    "--model.scales",
    str(SCHEDULE["scales"]),
    "--model.scale_steps",
    str(SCHEDULE["scale_steps"]),
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
    photo, result = (to_tensor(im.resize(rows[0][2].size)) for im in (rows[0][0], rows[0][2]))
    knob = [to_pil(towards_photo(result, photo, s)) for s in STRENGTHS]
    row_sheet([knob], REPO / "docs" / "style_strength.jpg")
    print(f"wrote docs/style_strength.jpg (style_strength {STRENGTHS})")


if __name__ == "__main__":
    main()
