"""The coarse-to-fine schedule: the size of the view that the loss sees at each step, and the size of the step.

    schedule = Schedule(scales=[128, 181], steps=[60, 40], lr_factor=0.5)
    schedule.fit(full=(384, 512), max_steps=300)   # the run's canvas, and the run length the phases must fit in
    schedule.view_size(70)                          # (136, 181): a downscaled view of the image
    schedule.lr_factor(70)                          # 0.5: the optimiser's step size is halved in the coarse phases
    with schedule.step_size(70, optimizer, image, images) as wrap:   # around the optimiser's step
        optimizer.step(wrap(closure))

The image keeps its full size throughout (DDP buckets, optimiser state and checkpoints stay valid); during the
coarse phases the loss sees a downscaled copy of it. With `flat_lr_factor` below 1 the step is smaller where the
photo is flat (and with `flat_step_shift` above 0, on a mostly flat photo, larger where it has detail, as far as the
painting has flat regions), too, and with `gradient_floor` above 0 where the loss barely pulls, on the step less its
regional part (`gradient_floor_region`; flat_regions.py). The module, its progress bar and its optimiser step all
ask this one object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import accumulate
from typing import TYPE_CHECKING

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor

from nst_pl.errors import ConfigError
from nst_pl.flat_regions import box_size, gradient_step_map, pair_shifts, regional_part, step_map

if TYPE_CHECKING:
    from nst_pl.data import PairImages


class Schedule:
    """Coarse phases of `scales` px (long side) for `steps` steps each, then the full size for the rest of the run;
    the optimiser's learning rate is multiplied by `lr_factor` during the coarse phases, and each pixel's step by
    `flat_regions.step_map` (at least `flat_lr_factor`) where the photo is flat, with `flat_step_shift` moved from
    there to its detail as far as the photo and the painting are flat (`flat_regions.pair_shifts`), and by
    `flat_regions.gradient_step_map` (with `gradient_floor` above 0) where its gradient is weak, that one on the step
    less `flat_regions.regional_part` (boxes of `gradient_floor_region` px per 256 px, 0: none; `gradient_floor_light`
    × its change of brightness)."""

    def __init__(
        self,
        scales: Sequence[int] | None = None,
        steps: Sequence[int] | None = None,
        lr_factor: float = 1.0,
        flat_lr_factor: float = 1.0,
        flat_step_shift: float = 0.0,
        gradient_floor: float = 0.0,
        gradient_floor_region: float = 0.0,
        gradient_floor_light: float = 1.0,
    ) -> None:
        if (scales is None) != (steps is None) or (scales is not None and len(scales) != len(steps)):
            raise ConfigError("model.scales and model.scale_steps go together, with one step count per scale")
        scales, steps = list(scales or []), list(steps or [])
        if any(s < 1 for s in scales) or scales != sorted(scales):
            raise ConfigError(f"model.scales must be positive and ascending, got {scales}")
        if any(n < 0 for n in steps):
            raise ConfigError(f"model.scale_steps must be >= 0, got {steps}")
        if not (0.0 < lr_factor <= 10.0):
            raise ConfigError(
                f"model.coarse_lr_factor must be above 0 and at most 10 (1: the same step size), got {lr_factor}"
            )
        if not (0.0 < flat_lr_factor <= 1.0):  # also refuses nan; 0 would freeze flat pixels of a noise start
            raise ConfigError(
                f"model.flat_lr_factor must be above 0 and at most 1 (1: the same step everywhere, the default; 0.3: "
                f"a third of it where the photo is flat), got {flat_lr_factor}"
            )
        if not (0.0 <= flat_step_shift < 1.0):  # also refuses nan; 1 would freeze the photo's flat pixels
            raise ConfigError(
                f"model.flat_step_shift must be at least 0 and below 1 (0: off; 0.7, the default: on a photo two "
                f"thirds flat under a painting a quarter flat, the photo's flat regions take 0.3x the step of its "
                f"detail), got {flat_step_shift}"
            )
        if not (0.0 <= gradient_floor <= 10.0):  # also refuses nan
            raise ConfigError(
                f"model.gradient_floor must be at least 0 and at most 10 (0: Adam's own step; 1, the default: a pixel "
                f"whose gradient is below its picture's mean moves in proportion to it), got {gradient_floor}"
            )
        if not (0.0 <= gradient_floor_region <= 256.0):  # also refuses nan
            raise ConfigError(
                f"model.gradient_floor_region must be at least 0 and at most 256 (px per 256 px of the picture; 0: the "
                f"floor holds back the whole step), got {gradient_floor_region}"
            )
        if not (0.0 <= gradient_floor_light <= 1.0):  # also refuses nan
            raise ConfigError(
                f"model.gradient_floor_light must be between 0 (the floor holds back the regional part's change of "
                f"brightness too) and 1 (it moves whole, with the regional colour), got {gradient_floor_light}"
            )
        self.scales = scales
        self.coarse_lr_factor = lr_factor
        self.flat_lr_factor, self.flat_step_shift = flat_lr_factor, flat_step_shift
        self.gradient_floor, self.gradient_floor_region = gradient_floor, gradient_floor_region
        self.gradient_floor_light = gradient_floor_light
        self._step_map: tuple | None = None  # (whose, flat_regions.step_map), made at the first step
        self._shifts: tuple | None = None  # (whose, pair_shifts)
        self.planned = steps  # as configured
        self.steps = steps  # as fitted into the run (`fit`)
        self.full: tuple[int, int] | None = None  # (h, w) of the image, once known

    def fit(self, full: Sequence[int], max_steps: int | None) -> None:
        """Take the image's (h, w), and fit the phases into a run of `max_steps` steps: a short run with a long
        schedule (--trainer.max_steps 200 with 3 x 100 coarse steps) keeps the schedule's shape, shrunk to two
        thirds of the run, so that the full size still gets a third (with a warning)."""
        self.full = (int(full[0]), int(full[1]))
        self.steps = self.planned
        if not max_steps or max_steps < 0 or sum(self.planned) < max_steps:
            return
        budget = (2 * max_steps) // 3
        self.steps = [n * budget // sum(self.planned) for n in self.planned]
        rank_zero_warn(
            f"model.scale_steps add up to {sum(self.planned)} but trainer.max_steps is {max_steps}: using "
            f"{self.steps} so that the full size gets the last {max_steps - sum(self.steps)} steps"
        )

    def long_side(self, step: int) -> int:
        """Long side (px) of the view at `step`: a coarse scale, else the full size."""
        full = max(self.full)
        for size, end in zip(self.scales, accumulate(self.steps)):
            if step < end:
                # A coarse scale that is not smaller than the image (the shipped schedule with a small
                # data.image_size) runs at full size: the schedule's step count is kept, nothing is upscaled.
                return min(size, full)
        return full

    def view_size(self, step: int) -> tuple[int, int]:
        """(h, w) of the view at `step`."""
        h, w = self.full
        scale = self.long_side(step) / max(h, w)
        if scale == 1:
            return h, w
        return max(1, round(h * scale)), max(1, round(w * scale))

    def coarse(self, step: int) -> bool:
        """True during a coarse phase: the view is smaller than the image."""
        return self.long_side(step) < max(self.full)

    def lr_factor(self, step: int) -> float:
        """What the optimiser's learning rate is multiplied by at `step`."""
        return self.coarse_lr_factor if self.coarse(step) else 1.0

    @contextmanager
    def step_size(self, step: int, optimizer, image: Tensor, images: PairImages) -> Iterator[Callable]:
        """Around the optimiser's step at `step`: its learning rates × `lr_factor(step)`, put back afterwards (so
        checkpoints and schedulers only see the configured ones); then, with `flat_lr_factor` below 1,
        `flat_step_shift` above 0 or `gradient_floor` above 0, each pixel of `image` moved that step's way × its
        step maps. Yields a function that wraps the step's closure (as it is, with neither): the image before the
        step is copied after the closure's backward, not at the memory peak."""
        kept = []

        def wrap(closure: Callable) -> Callable:
            def run():
                loss = closure()
                if not kept:
                    kept.append(image.detach().clone())
                return loss

            return run

        saved = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * self.lr_factor(step)
        try:
            yield wrap if self.shapes_steps(images) else (lambda closure: closure)
        finally:
            for group, lr in zip(optimizer.param_groups, saved):
                group["lr"] = lr
        if kept:
            with torch.no_grad():
                step_taken = image - kept[0]
                second_moment = None
                if self.gradient_floor > 0:
                    state = optimizer.state.get(image, {})  # empty: a first step the gradient scaler skipped
                    # Adam divides by the running maximum with amsgrad
                    second_moment = state.get("max_exp_avg_sq", state.get("exp_avg_sq"))
                if second_moment is not None:
                    # the regional part first: its running sums are the step's largest temporaries
                    regional = regional_part(
                        step_taken, images.sizes, self.gradient_floor_region, self.gradient_floor_light
                    )
                    factor = gradient_step_map(second_moment, images.sizes, self.gradient_floor)
                    # the regional part moves whole; with region 0 it is 0 and the floor holds back the whole step
                    step_taken.sub_(regional).mul_(factor).add_(regional)  # in place: print-size images are large
                    del factor, regional
                flat_map = self.flat_step_map(image, images)
                if flat_map is not None:
                    step_taken.mul_(flat_map)
                image.copy_(kept[0].add_(step_taken))

    def step_copies(self, images: PairImages) -> float:
        """Image-sized temporaries alive at once in the optimiser's step, after the backward (memory.py; measured by
        tests/test_tiling.py): Adam's own two, with a step map the image before the step too; with the floor, that,
        the step, its regional part and its factor, or while the regional part is made, the two running sums of a
        pair's box average (its canvas grown by the box: up to 2.25 copies each at a box of half the long side)."""
        if self.gradient_floor <= 0:
            return 3.0 if self.shapes_flat_steps(images) else 2.0
        grown = 0  # the largest pair's padded sums, in px
        for h, w in images.sizes if self.gradient_floor_region > 0 else []:
            box = box_size(self.gradient_floor_region, h, w)
            grown = max(grown, (h + box) * (w + box))
        return max(4.0, 3.0 + 2.0 * grown / images.content[:, 0].numel())  # ÷ the image's pixels, all pairs

    def shapes_steps(self, images: PairImages) -> bool:
        """Whether a step map changes the optimiser's step on `images`, pixel by pixel."""
        return self.shapes_flat_steps(images) or self.gradient_floor > 0

    def shapes_flat_steps(self, images: PairImages) -> bool:
        """Whether `flat_step_map` scales the step on `images`: `flat_lr_factor` below 1, or a pair shifted."""
        return self.flat_lr_factor < 1 or any(self.pair_shifts(images))

    def flat_step_map(self, image: Tensor, images: PairImages) -> Tensor | None:
        """`flat_regions.step_map` of the photos in `images` (with `flat_step_shift`, shifted as far as each photo and
        its paintings are flat), made once per run's photos and device, on the host; None where it would be 1."""
        key = (id(images), image.device, image.dtype, self.flat_lr_factor, self.flat_step_shift)
        if self._step_map is None or self._step_map[0] != key:
            made = None
            if self.shapes_flat_steps(images):
                shifts = self.pair_shifts(images)
                made = step_map(images.content, images.sizes, self.flat_lr_factor, shifts).to(image.device, image.dtype)
            self._step_map = (key, made)
        return self._step_map[1]

    def pair_shifts(self, images: PairImages) -> list[float]:
        """Each pair's part of `flat_step_shift` (`flat_regions.pair_shifts`; measured once per run's pictures): 0
        for all with the shift off."""
        if self.flat_step_shift <= 0:
            return [0.0] * len(images.sizes)
        key = (id(images), self.flat_step_shift)
        if self._shifts is None or self._shifts[0] != key:
            shifts = pair_shifts(images.content, images.sizes, images.styles, images.blend, self.flat_step_shift)
            self._shifts = (key, shifts)
        return self._shifts[1]
