"""Resuming a run with `--ckpt_path`: what a checkpoint must hold, and which options may change.

Resume means what the user said. The run's options are the command line and its config files, as for any run; the
checkpoint only supplies the state (images, EMA, optimiser state, loop counters). Lightning's own `LightningCLI` lays
the checkpoint's hyper-parameters over the command line; nst-pl does not (`NSTCLI._parse_ckpt_path`), so the saved
`config.yaml` is what actually ran.

- Options that may change on resume (applied, and listed in one warning line): the loss weights, the style-loss kind,
  `relative_losses`, the coarse-to-fine schedule, `tile_size` (same loss and gradient, other memory), `ema_decay`
  (the average so far is carried over), colour preservation, the optimiser's hyper-parameters such as its learning
  rate, and everything under `trainer`, `image_logger` and `checkpoint` (e.g. a larger `trainer.max_steps`).
- Options that cannot change (refused in one paragraph that names each with both values): the image shape and the
  pairs (`data.content`, `data.style`, `data.pairing`, `data.style_blend`, `data.image_size`), the feature space
  (`model.extractor`, `model.content_layers`, `model.style_layers`) and the optimiser's class.

Every check runs before anything is written: `load_checkpoint` when the command line is parsed, `check_resume` in
`NSTCLI.before_fit` (after the output-folder probe, before the run's folder exists).
"""

from __future__ import annotations

import math
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from nst_pl.errors import ConfigError
from nst_pl.pictures import carry_average

# What nst-pl stores in its checkpoints beside Lightning's keys (module.StyleTransfer.on_save_checkpoint).
NST_KEY = "nst_pl"
# Model options that define the feature space the image is optimised in: they cannot change on resume.
FIXED_MODEL_OPTIONS = ("content_layers", "style_layers")
# Lightning's special `ckpt_path` values: they name no file of an nst-pl run (each run writes a new version folder).
_LIGHTNING_KEYWORDS = ("best", "last", "hpc", "registry")
_FIX = "pass the last.ckpt of an earlier run, e.g. --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt"


def _bad(path: object, what: str, fix: str = _FIX) -> ConfigError:
    return ConfigError(f"--ckpt_path '{path}' {what}; {fix}")


def class_name(obj: object) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def load_checkpoint(ckpt_path: str | Path) -> dict[str, Any] | None:
    """The checkpoint at `ckpt_path`, loaded with the safe loader and checked to be an nst-pl state.

    Returns None for a remote URL (s3://…): Lightning reads those itself. Raises ConfigError, naming the file, what
    is wrong and what to do, for a missing path, a folder, a special file, an empty, truncated or foreign file, a
    pickle the safe loader refuses, or a checkpoint that does not hold nst-pl's images and optimiser state.
    """
    if "://" in str(ckpt_path):
        return None
    path = Path(ckpt_path).expanduser()
    if not path.exists():
        if str(ckpt_path) in _LIGHTNING_KEYWORDS:
            return _raise(_bad(ckpt_path, "names no file: nst-pl writes each run to a new version folder"))
        return _raise(_bad(ckpt_path, "does not exist (check the spelling; nothing was written)"))
    if path.is_dir():
        found = sorted(path.rglob("last.ckpt"))
        hint = f"pass the file inside it, e.g. --ckpt_path '{found[-1]}'" if found else _FIX
        return _raise(_bad(ckpt_path, "is a folder, not a checkpoint file", hint))
    if not path.is_file():
        return _raise(_bad(ckpt_path, "is not a regular file (a pipe, socket or device)"))
    if path.stat().st_size == 0:
        return _raise(_bad(ckpt_path, "is empty (0 bytes: an interrupted copy?)", f"use another checkpoint; {_FIX}"))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch wraps every refusal in "Weights only load failed …"; a Python object that is not allowed says
        # "Unsupported global: GLOBAL pathlib.PosixPath …", anything else means the bytes are not a checkpoint.
        refused = [line.strip() for line in str(err).splitlines() if "Unsupported global" in line]
        if refused:
            return _raise(
                _bad(
                    ckpt_path,
                    f"holds Python objects that the safe loader refuses to unpickle ({refused[0][:200]})",
                    f"nst-pl loads only the checkpoints it writes; {_FIX}",
                )
            )
        return _raise(_bad(ckpt_path, "is not a readable checkpoint: truncated, damaged or another file"))
    except (EOFError, OSError, RuntimeError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        return _raise(_bad(ckpt_path, f"is not a readable checkpoint: truncated, damaged or another file ({reason})"))
    problem = _not_an_nst_state(ckpt)
    if problem:
        return _raise(_bad(ckpt_path, f"is not an nst-pl checkpoint: {problem}"))
    return ckpt


def _raise(err: ConfigError):
    raise err


def _not_an_nst_state(ckpt: object) -> str:
    """'' when `ckpt` holds what a resume needs, else what is missing."""
    if not isinstance(ckpt, dict):
        return f"it holds a {type(ckpt).__name__}, not a Lightning checkpoint"
    state = ckpt.get("state_dict")
    image = state.get("image") if isinstance(state, dict) else None
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3 or image.numel() == 0:
        return "it holds no generated images (state_dict['image'] of shape [N, 3, H, W])"
    if not isinstance(ckpt.get("global_step"), int) or ckpt["global_step"] < 0:
        return "it holds no step count (global_step)"
    optimizers = ckpt.get("optimizer_states")
    if not isinstance(optimizers, list) or len(optimizers) != 1 or not isinstance(optimizers[0], dict):
        return "it holds no optimiser state (one optimiser for the image)"
    groups = optimizers[0].get("param_groups")
    if not isinstance(groups, list) or len(groups) != 1:
        return "its optimiser state does not belong to one image parameter"
    for value in (optimizers[0].get("state") or {}).values():
        for tensor in value.values() if isinstance(value, dict) else ():
            if isinstance(tensor, torch.Tensor) and tensor.ndim == 4 and tensor.shape != image.shape:
                return f"its optimiser state has shape {tuple(tensor.shape)}, its images {tuple(image.shape)}"
    return ""


def _show(value: object) -> str:
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return str(value)
    return repr(value) if isinstance(value, str) else str(value)


def _optimizer_kind(optimizer_factory) -> tuple[str, frozenset[str], torch.optim.Optimizer] | None:
    """(class name, param-group keys, the optimiser) of the configured optimiser, built on a dummy parameter."""
    try:
        opt = optimizer_factory([nn.Parameter(torch.zeros(1))])
    except Exception:  # a bad option: configure_optimizers reports it with its option name
        return None
    return class_name(opt), frozenset(k for k in opt.param_groups[0] if k != "params"), opt


def check_resume(ckpt: dict[str, Any], ckpt_path: str | Path, model, datamodule, max_steps: int) -> None:
    """Refuse options that cannot change on resume (one paragraph, every differing option with both values); warn
    once about the options that do change, and when the checkpoint has reached `max_steps` already. Decodes the
    images (`datamodule.setup`) to compare the image shape."""
    fixed: list[str] = []
    changed: list[str] = []
    saved_hp = dict(ckpt.get("hyper_parameters") or {})
    saved_meta = ckpt.get(NST_KEY) or {}
    now_hp = dict(model.hparams)
    for key, now in now_hp.items():
        if key not in saved_hp and saved_hp:  # an option newer than the checkpoint: its default joins the run now
            changed.append(f"model.{key}: not in the checkpoint (an older nst-pl), {_show(now)} now")
            continue
        if key not in saved_hp or saved_hp[key] == now or key == "init":  # init: the image comes from the checkpoint
            continue
        entry = f"model.{key}: {_show(saved_hp[key])} in the checkpoint, {_show(now)} now"
        (fixed if key in FIXED_MODEL_OPTIONS else changed).append(entry)

    extractor = class_name(model.objective.extractor)
    if saved_meta.get("extractor") not in (None, extractor):
        fixed.append(f"model.extractor: {saved_meta['extractor']} in the checkpoint, {extractor} now")

    kind = _optimizer_kind(model.optimizer_factory)
    if kind is not None:
        name, keys, _ = kind
        saved_group = ckpt["optimizer_states"][0]["param_groups"][0]
        saved_name = saved_meta.get("optimizer")
        saved_keys = frozenset(k for k in saved_group if k != "params")
        if (saved_name and saved_name != name) or (not saved_name and saved_keys != keys):
            fixed.append(f"model.optimizer: {saved_name or 'another optimiser'} in the checkpoint, {name} now")

    datamodule.setup("fit")
    saved_shape = tuple(ckpt["state_dict"]["image"].shape)
    now_shape = tuple(datamodule.images.content.shape)
    saved_names = saved_meta.get("pairs")
    now_names = list(datamodule.images.names)
    data_options = "data.content, data.style, data.pairing, data.style_blend or data.image_size"
    if saved_shape != now_shape:
        fixed.append(f"the images ({data_options}): shape {saved_shape} in the checkpoint, {now_shape} now")
    elif saved_names is not None and list(saved_names) != now_names:
        fixed.append(f"the pairs ({data_options}): {_few(saved_names)} in the checkpoint, {_few(now_names)} now")

    if fixed:
        config = Path(ckpt_path).parent.parent / "config.yaml"
        source = f"its run's --config '{config}'" if config.is_file() else "the checkpoint's run's options"
        raise ConfigError(
            f"cannot resume from '{ckpt_path}': these options cannot change on resume: {'; '.join(fixed)}. "
            f"Resume with the checkpoint's values ({source} plus --ckpt_path), or start a new run without "
            "--ckpt_path."
        )
    if changed:
        rank_zero_warn(f"resuming from step {ckpt['global_step']} with changed options: {'; '.join(changed)}")
    # A finished run resumed (e.g. to write its images after a full disk): say that nothing is optimised.
    step = int(ckpt.get("global_step", 0))
    if 0 <= max_steps <= step:
        rank_zero_warn(
            f"the checkpoint is at step {step} and trainer.max_steps is {max_steps}: no step runs, the images of step "
            f"{step} are written; raise trainer.max_steps to optimise further"
        )


def _few(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}{', …' if len(names) > limit else ''}] ({len(names)} pairs)"


def checkpoint_record(model) -> dict[str, Any]:
    """What a resume must not change, beside the hyper-parameters, as `StyleTransfer.on_save_checkpoint` stores it
    under NST_KEY: the extractor's and the optimiser's classes and the pairs' names."""
    optimizers = model.trainer.optimizers if model._trainer is not None else []
    return {
        "extractor": class_name(model.objective.extractor),
        "optimizer": class_name(optimizers[0]) if optimizers else None,
        "pairs": list(model.pair_images.names) if model.pair_images is not None else None,
    }


def fit_checkpoint(checkpoint: dict[str, Any], model) -> None:
    """The checkpoint made fit for `model` before Lightning loads it (`StyleTransfer.on_load_checkpoint`): the same
    image shape, the average carried over to this run's `ema_decay`, this run's optimiser options."""
    # The image parameter is created in `setup` from the data, so it already has the checkpoint's shape; a mismatch
    # means the resumed run was given other images (`nst-pl fit` refuses it earlier, in `check_resume`).
    state = checkpoint["state_dict"]
    saved = state.get("image")
    if saved is not None and model.image.shape != saved.shape:
        raise ConfigError(
            f"the checkpoint holds images of shape {tuple(saved.shape)} but this run's data give "
            f"{tuple(model.image.shape)}: resume with the same data.content, data.style and data.image_size"
        )
    carry_average(state, model.image.data, checkpoint.get("hyper_parameters") or {}, model.ema_decay)
    # Lightning restores the optimiser's learning rate etc. from the checkpoint: the configured ones apply.
    reapply_optimizer_options(checkpoint, model.optimizer_factory)


def reapply_optimizer_options(checkpoint: dict[str, Any], optimizer_factory) -> None:
    """Lightning restores the optimiser's param groups, learning rate included, from the checkpoint: overwrite
    their hyper-parameters with the configured ones so that e.g. a new `lr` applies. The state (moments) stays."""
    states = checkpoint.get("optimizer_states") or []
    kind = _optimizer_kind(optimizer_factory)
    if len(states) != 1 or kind is None:
        return
    _, keys, opt = kind
    new_group = opt.param_groups[0]
    for group in states[0].get("param_groups", []):
        if frozenset(k for k in group if k != "params") == keys:
            group.update({k: v for k, v in new_group.items() if k != "params"})
