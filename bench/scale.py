"""Scale benchmark: batching efficiency over N pairs, peak memory against a plain PyTorch loop, GPU throughput.

    python bench/scale.py            # the full table (~10 min on 2 idle CPU cores; longer on a loaded machine)
    python bench/scale.py --quick    # smoke run (small images, few steps)
    python bench/scale.py --gpu      # only the GPU section (it also runs at the end of a full run when CUDA is there)

1. Batching (CPU): pair-steps per second for N = 1, 2, 4, 8 pairs at 256 px in one [N, 3, H, W] parameter, through
   nst-pl's Lightning training step; VGG19 (content relu4_2, style relu1_1…relu5_1), Adam. Median step time over
   the timed steps (the first step, which also computes the targets, is excluded); ratio to N = 1 in the same run.
2. Peak memory (CPU): at 256 / 512 / 1024 px, one pair, nst-pl's training step vs. the plain PyTorch loop of
   bench/common.py (same extractor, layers and losses, no Lightning). Each measurement runs in a fresh process: peak
   RSS (`getrusage` ru_maxrss) at the end minus the peak right after the imports, so it counts the extractor, the
   images, the targets, the activations kept for backward and the optimiser state. Goal: ratio <= 1.10.
3. GPU (only where CUDA is available; the output says so otherwise): steps/s at 512 px for 32-true / bf16-mixed
   and N = 1 / 16 pairs.

Threads: one per process by default (`--threads`). On a shared machine, OpenMP threads that outnumber the free cores
spin at barriers and a step gets ~10x slower (measured: 64 px, 2 threads 3.2 s/step vs. 1 thread 0.25 s under a load
average of 7 on 2 cores); on an idle machine pass --threads <cores>.

Random weights throughout: speed and memory do not depend on the weights' values. The machine may be shared and
noisy: every figure is a median, and the figures that matter are the ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CONTENT = REPO / "images" / "tubingen.jpg"
STYLE = REPO / "style" / "starry_night.jpg"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


# ------------------------------------------------------------------------------------------------------ workers
def _imports():
    """Everything either side needs, imported before the baseline is taken so that both baselines are alike."""
    sys.path.insert(0, str(BENCH))
    import pytorch_lightning as pl
    import torch

    torch.set_num_threads(int(os.environ.get("NST_BENCH_THREADS", "1")))
    from common import CONTENT_LAYERS, STYLE_LAYERS, StepTimer, plain_steps  # noqa: F401

    from nst_pl.data import PairDataModule
    from nst_pl.extractors import VGG19
    from nst_pl.module import StyleTransfer
    from nst_pl.trainer import TRAINER_DEFAULTS

    return pl, torch, CONTENT_LAYERS, STYLE_LAYERS, plain_steps, TRAINER_DEFAULTS, PairDataModule, VGG19, StyleTransfer


def _content_dir(root: Path, n: int) -> Path:
    """n copies of the same photo: n pairs with the same canvas, so that only the batch size changes."""
    folder = root / f"content_{n}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        shutil.copy(CONTENT, folder / f"photo_{i:02d}.jpg")
    return folder


def _nst_steps(
    n: int,
    size: int,
    steps: int,
    root: Path,
    precision: str = "32-true",
    accelerator: str = "cpu",
    warmup: int = 2,
    model_kw: dict | None = None,
    data_kw: dict | None = None,
    keep: list | None = None,
    cpu: list | None = None,
):
    """Runs nst-pl's training step for `warmup` untimed steps, then `steps` timed ones; returns the timed steps.

    Untimed by default: the first step (it also computes the targets) and the second (caches warm up)."""
    pl, torch, CONTENT_LAYERS, STYLE_LAYERS, _, TRAINER_DEFAULTS, PairDataModule, VGG19, StyleTransfer = _imports()
    cuda = accelerator == "gpu"

    class Timer(pl.Callback):
        def __init__(self):
            self.times, self.cpu, self._t, self._c = [], [], None, None

        def on_train_batch_start(self, *a):
            self._t, self._c = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, *a):
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self._t)
            self.cpu.append(time.process_time() - self._c)

    torch.manual_seed(0)
    # The module's defaults when these benchmarks were recorded, before they became the vgg19 recipe's (a step costs
    # the same with other weights and step sizes); `model_kw` overrides them.
    adam = lambda params: torch.optim.Adam(params, lr=0.007)  # noqa: E731
    recipe = dict(style_weight=3.0, relative_losses=True, ema_decay=0.9, optimizer=adam)
    model = StyleTransfer(
        VGG19(weights=None), content_layers=CONTENT_LAYERS, style_layers=STYLE_LAYERS, **{**recipe, **(model_kw or {})}
    )
    content = CONTENT if n == 1 else _content_dir(root, n)
    data = PairDataModule(content=str(content), style=str(STYLE), image_size=size, **(data_kw or {}))
    timer = Timer()
    args = dict(TRAINER_DEFAULTS)
    args.update(
        max_steps=warmup + steps,
        accelerator=accelerator,
        devices=1,
        precision=precision,
        default_root_dir=str(root),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[timer],
    )
    pl.Trainer(**args).fit(model, datamodule=data)
    if keep is not None:  # the caller's handle on the fitted model (bench/memory.py reads its estimate)
        keep.append(model)
    if cpu is not None:  # CPU seconds of each step: on a crowded machine, wall time measures the neighbours
        cpu.extend(timer.cpu[warmup:])
    return timer.times[warmup:]


def worker_memory(kind: str, size: int, steps: int) -> dict:
    _, _, _, _, plain_steps, _, _, _, _ = _imports()
    base = _peak_mb()
    with tempfile.TemporaryDirectory() as root:
        if kind == "nst":
            times = _nst_steps(1, size, steps, Path(root), warmup=0)
        else:
            *_, times = plain_steps(CONTENT, STYLE, size, steps, style_weight=10.0, lr=0.02)
    return {"peak_mb": _peak_mb() - base, "base_mb": base, "times": times}


def worker_batching(ns: list[int], size: int, steps: int, rounds: int) -> dict:
    times: dict[int, list[float]] = {n: [] for n in ns}
    with tempfile.TemporaryDirectory() as root:
        for r in range(rounds):
            # alternate the order so that a burst of load from other processes does not hit one N only
            for n in ns if r % 2 == 0 else ns[::-1]:
                times[n] += _nst_steps(n, size, steps, Path(root), warmup=1)
                print(
                    f"  round {r + 1}, N={n}: steps {' '.join(f'{t:.3f}' for t in times[n])} s",
                    file=sys.stderr,
                    flush=True,
                )
    return {str(n): t for n, t in times.items()}


def worker_gpu(size: int, steps: int) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as root:
        for precision in ("32-true", "bf16-mixed"):
            for n in (1, 16):
                times = _nst_steps(n, size, steps, Path(root), precision=precision, accelerator="gpu")
                out[f"{precision} N={n}"] = times
                print(f"  {precision} N={n}: median {_median(times):.4f} s/step", file=sys.stderr, flush=True)
    return out


# ------------------------------------------------------------------------------------------------------- driver
def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def _run_worker(threads: int, *argv: str, script: Path = Path(__file__)) -> dict:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        NST_BENCH_THREADS=str(threads),
    )
    proc = subprocess.run(
        [sys.executable, str(script.resolve()), "--worker", *argv],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"worker {argv} failed with exit code {proc.returncode}")
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: small images, few steps")
    ap.add_argument("--gpu", action="store_true", help="only the GPU section (skipped, with a note, without CUDA)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per N and round (batching)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds over N = 1, 2, 4, 8 (batching)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (see the docstring)")
    ap.add_argument(
        "--mem-steps",
        type=int,
        default=1,
        help="steps per memory measurement (the peak is reached in the first: targets, backward, Adam state)",
    )
    ap.add_argument("--sections", default="batching,memory", help="CPU sections to run: batching, memory")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        kind, *rest = args.worker
        if kind == "memory":
            result = worker_memory(rest[0], int(rest[1]), int(rest[2]))
        elif kind == "batching":
            result = worker_batching(json.loads(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]))
        else:
            result = worker_gpu(int(rest[0]), int(rest[1]))
        print("RESULT " + json.dumps(result), flush=True)
        return

    import torch

    ns, size, sizes, mem_steps = [1, 2, 4, 8], 256, [256, 512, 1024], args.mem_steps
    if args.quick:
        ns, size, sizes, mem_steps, args.steps, args.rounds = [1, 2], 64, [64, 128], 1, 2, 1
    started = time.time()
    print(
        f"nst-pl scale benchmark: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__} ({args.threads} thread(s) per process), VGG19 with random weights, "
        f"content relu4_2, style relu1_1..relu5_1, Adam"
    )
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}\n", flush=True)

    if not args.gpu:
        cpu_sections(args, ns, size, sizes, mem_steps)
    gpu_section(args)
    print(
        f"\ntotal bench time {time.time() - started:.0f} s; load average at end: "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )


def cpu_sections(args, ns: list[int], size: int, sizes: list[int], mem_steps: int) -> None:
    if "batching" in args.sections:
        batching_section(args, ns, size)
    if "memory" in args.sections:
        memory_section(args, sizes, mem_steps)


def batching_section(args, ns: list[int], size: int) -> None:
    batching = _run_worker(args.threads, "batching", json.dumps(ns), str(size), str(args.steps), str(args.rounds))
    base = _median(batching["1"])
    print(f"### Batching: N pairs in one [N, 3, H, W] parameter, {size} px, CPU")
    print(f"(median of {args.rounds} x {args.steps} timed steps per N)\n")
    print("| N pairs | s / step | pair-steps / s | throughput vs N=1 | time per step vs N=1 |")
    print("|---:|---:|---:|---:|---:|")
    for n in ns:
        med = _median(batching[str(n)])
        print(f"| {n} | {med:.3f} | {n / med:.3f} | {n / med / (1 / base):.2f}x | {med / base:.2f}x |")
    print(flush=True)


def memory_section(args, sizes: list[int], mem_steps: int) -> None:
    print("### Peak memory, one pair, CPU: nst-pl training step vs. plain PyTorch loop")
    print(f"(peak RSS above the post-import peak, fresh process each, {mem_steps} step(s) each)\n")
    print("| image (long side) | plain loop MB | nst-pl MB | nst-pl / plain (goal <= 1.10) |")
    print("|---:|---:|---:|---:|")
    for px in sizes:
        plain = _run_worker(args.threads, "memory", "plain", str(px), str(mem_steps))
        nst = _run_worker(args.threads, "memory", "nst", str(px), str(mem_steps))
        print(
            f"| {px} px | {plain['peak_mb']:.0f} | {nst['peak_mb']:.0f} | {nst['peak_mb'] / plain['peak_mb']:.2f}x |",
            flush=True,
        )
    print()


def gpu_section(args) -> None:
    import torch

    print("### GPU: 512 px, steps / s")
    if not torch.cuda.is_available():
        print("(no CUDA device on this machine: GPU section skipped)")
    else:
        gpu = _run_worker(args.threads, "gpu", "512", "10" if not args.quick else "3")
        print(f"({torch.cuda.get_device_name(0)}; median of the timed steps)\n")
        print("| precision | N pairs | steps / s | pair-steps / s |")
        print("|---|---:|---:|---:|")
        for key, times in gpu.items():
            precision, n = key.split(" N=")
            med = _median(times)
            print(f"| {precision} | {n} | {1 / med:.2f} | {int(n) / med:.2f} |")


if __name__ == "__main__":
    main()
