"""`nst-pl`: the console script. `nst-pl fit --config vgg19`; `nst-pl compare …` (compare.py).

Every run is built by `nst_pl.fit.make_cli`, whichever subcommand starts it. What a user sees when something goes
wrong (README, "What happens when …"):
- a problem with the input or the config (a missing image, an unknown layer, weights that do not fit, an output
  folder that cannot be written, a diverged loss, a missing `compare --options` file): one paragraph on stderr,
  `nst-pl: error: <what and how to fix it>`, exit code 2 — no traceback. These are the `NSTError`s (errors.py)
  and Lightning's MisconfigurationException; `NST_PL_DEBUG=1` shows the full traceback. Anything else is a bug
  and keeps its traceback.
- Ctrl-C / SIGTERM during `fit`: the current images and a checkpoint are saved, a resume hint is printed, and the
  exit code is 130 / 143 (128 + the signal number, as a shell reports a killed process).

Fast answers: this module, stylize.py and the checks before a run (early_checks.py) load without torch and Lightning,
which take ~5 s to import here; `--help`, `--version` and a bad input or output are answered before they are
imported. `fit --help` and `compare` need them (their options come from the classes).
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

from nst_pl.early_checks import check_run
from nst_pl.errors import DEBUG_ENV, NSTError, debug
from nst_pl.quiet import VERBOSE_FLAG, quiet_run, safe_console
from nst_pl.stylize import main as stylize_main

__all__ = ["main", "user_errors"]

SUBCOMMANDS = ("fit", "stylize", "compare")

HELP = """usage: nst-pl COMMAND [options]   (nst-pl COMMAND --help for the options of one)

Neural style transfer (Gatys et al.) with PyTorch Lightning.

commands:
  stylize   one photo and one painting (or folders of them) to an image file:
              nst-pl stylize photo.jpg painting.jpg -o out.png
  fit       a run from a recipe, with every option (model, data, extractor, trainer):
              nst-pl fit --config vgg19 --data.content photos/ --data.style paintings/
  compare   several recipes on the same pairs, side by side:
              nst-pl compare --configs 'experiments/*' --data.content photo.jpg --data.style painting.jpg

Bundled recipes for --config: vgg19 (the default of stylize), alexnet, resnet, ddp. Add --verbose (or set
NST_PL_DEBUG=1) to see every library message and warning, and full tracebacks with NST_PL_DEBUG=1. On a CPU
without fast bfloat16 maths (AVX-512 or AMX), --trainer.precision bf16-mixed or 16-mixed runs 32-true, saying so;
--force_precision true keeps it.
"""


def user_errors() -> tuple[type[Exception], ...]:
    """Errors whose message is written for the user: ours, and Lightning's for a trainer configuration that cannot
    work (only once Lightning is imported: it cannot have raised one before)."""
    if "pytorch_lightning" not in sys.modules:
        return (NSTError,)
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    return NSTError, MisconfigurationException


def main(args=None) -> int | None:
    """The `nst-pl` console script. Exits 2 with a one-paragraph message on input/config errors (see above)."""
    # A console that goes away (`> /dev/full`, `| head`, a closed terminal) drops output, not the run (quiet.py).
    with safe_console():
        return _main(list(sys.argv[1:] if args is None else args))


def _main(argv: list[str]) -> int | None:
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(HELP)
        return 0
    if argv[0] not in SUBCOMMANDS:
        if argv[0] == "--version":
            try:
                sys.stdout.write(f"nst-pl {version('nst-pl')}\n")
            except PackageNotFoundError:
                sys.stdout.write("nst-pl (not installed: running from a source tree)\n")
            return 0
        sys.stderr.write(f"nst-pl: error: unknown command {argv[0]!r}; choose {', '.join(SUBCOMMANDS)}\n")
        raise SystemExit(2)
    verbose = VERBOSE_FLAG in argv
    argv = [a for a in argv if a != VERBOSE_FLAG]
    try:
        with quiet_run(verbose):
            # `compare` and `stylize` are not LightningCLI subcommands: they parse their own command line first,
            # then build their runs with the same factory (make_cli) as `fit`.
            if argv[0] == "compare":
                from nst_pl.compare import main as compare_main

                return compare_main(argv[1:])
            if argv[0] == "stylize":
                return stylize_main(argv[1:])
            check_run(argv)  # before torch and Lightning load: a missing photo is answered in a second
            from nst_pl.fit import make_cli

            cli = make_cli(argv)
            line = cli.result_line() if cli.trainer.is_global_zero else ""
            if line:
                print(line)
    except KeyboardInterrupt:  # Ctrl-C before the training loop started (loading images, weights): nothing to save
        if debug():
            raise
        sys.stderr.write("nst-pl: interrupted before training started; nothing was saved\n")
        raise SystemExit(130) from None
    except Exception as exc:
        if debug() or not isinstance(exc, user_errors()):
            raise
        sys.stderr.write(f"nst-pl: error: {exc}\n(set {DEBUG_ENV}=1 to see the full traceback)\n")
        raise SystemExit(2) from None
    return None


if __name__ == "__main__":
    sys.exit(main())
