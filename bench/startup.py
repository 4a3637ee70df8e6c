"""How long `nst-pl` takes to answer, launch to exit, against the imports it cannot avoid (issue 22).

    python bench/startup.py              # medians of 5 (a fresh process each), the load average before and after
    python bench/startup.py --rounds 3

Measured, each in a fresh interpreter, in rounds (each round runs every command once, so that load from other
processes hits them alike):
- the floor: `python -c "import torch"` and `python -c "import torch, pytorch_lightning"`;
- answers that need neither: `nst-pl --help`, a refusal of a missing photo, a refusal of an unwritable `-o`;
- `nst-pl stylize` at 32 px, 1 step, launch to exit (the offline VGG16 file when present, else random weights).
Goals: the help and the refusals <= 2 s; the stylize run <= the import of torch and Lightning + 1 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OFFLINE_VGG16 = REPO.parent / "shared" / "weights" / "vgg16_caffe_hed.pth"
PHOTO, PAINTING = REPO / "images" / "tubingen.jpg", REPO / "style" / "starry_night.jpg"


def commands(work: Path) -> dict[str, tuple[list[str], int]]:
    """What is timed: (command line, the exit code it must end with)."""
    nst = [sys.executable, "-m", "nst_pl.cli"]
    weights = (
        ["--model.extractor", "nst_pl.extractors.VGG16", "--model.extractor.init_args.weights", str(OFFLINE_VGG16)]
        + ["--model.extractor.init_args.normalization", "caffe"]
        if OFFLINE_VGG16.exists()
        else ["--model.extractor.init_args.weights", "null"]
    )
    tiny = ["--data.image_size", "32", "--trainer.max_steps", "1", "--model.scales", "null"]
    tiny += ["--model.scale_steps", "null", "--trainer.default_root_dir", str(work)]
    return {
        'python -c "import torch"': ([sys.executable, "-c", "import torch"], 0),
        'python -c "import torch, pytorch_lightning"': ([sys.executable, "-c", "import torch, pytorch_lightning"], 0),
        "nst-pl --help": ([*nst, "--help"], 0),
        "nst-pl stylize missing.jpg painting.jpg (refused)": ([*nst, "stylize", "missing.jpg", str(PAINTING)], 2),
        "nst-pl stylize photo painting -o a_file/out.png (refused)": (
            [*nst, "stylize", str(PHOTO), str(PAINTING), "-o", str(work / "a_file" / "out.png")],
            2,
        ),
        "nst-pl stylize, 32 px, 1 step": (
            [*nst, "stylize", str(PHOTO), str(PAINTING), "-o", str(work / "out.png"), *weights, *tiny],
            0,
        ),
    }


def seconds(cmd: list[str], code: int, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    took = time.perf_counter() - start
    if proc.returncode != code:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}, not {code}:\n{proc.stderr[-2000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("NST_PL_DEBUG", None)
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "a_file").write_text("")  # `-o a_file/out.png` cannot be written, even by root
        todo = commands(work)
        for r in range(args.rounds):
            for name, (cmd, code) in todo.items():
                times.setdefault(name, []).append(seconds(cmd, code, env))
                shutil.rmtree(work / "lightning_logs", ignore_errors=True)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    medians = {name: statistics.median(t) for name, t in times.items()}
    floor = medians['python -c "import torch, pytorch_lightning"']
    goals = {
        "nst-pl --help": 2.0,
        "nst-pl stylize missing.jpg painting.jpg (refused)": 2.0,
        "nst-pl stylize photo painting -o a_file/out.png (refused)": 2.0,
        "nst-pl stylize, 32 px, 1 step": floor + 1.0,
    }
    weights = "offline VGG16 file" if OFFLINE_VGG16.exists() else "random weights"
    print(f"\nload average {load_before[0]:.2f} before, {load_after[0]:.2f} after; {os.cpu_count()} CPUs; {weights}")
    print(f"| command (launch to exit, median of {args.rounds}) | seconds | goal |")
    print("|---|---:|---|")
    for name, t in medians.items():
        goal = f"<= {goals[name]:.2f} s: {'met' if t <= goals[name] else 'NOT met'}" if name in goals else ""
        print(f"| `{name}` | {t:.2f} | {goal} |")


if __name__ == "__main__":
    main()
