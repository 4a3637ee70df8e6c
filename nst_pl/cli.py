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
"""

from __future__ import annotations

import sys

from pytorch_lightning.utilities.exceptions import MisconfigurationException

from nst_pl import compare
from nst_pl.errors import NSTError
from nst_pl.fit import DEBUG_ENV, NSTCLI, TRAINER_DEFAULTS, debug, make_cli

__all__ = ["TRAINER_DEFAULTS", "NSTCLI", "USER_ERRORS", "main"]

# Errors whose message is written for the user: ours, and Lightning's for a trainer configuration that cannot work.
USER_ERRORS = (NSTError, MisconfigurationException)


def main(args=None) -> int | None:
    """The `nst-pl` console script. Exits 2 with a one-paragraph message on input/config errors (see above)."""
    argv = sys.argv[1:] if args is None else args
    try:
        # `nst-pl compare …` is not a LightningCLI subcommand (it runs several fit configs, see compare.py):
        # dispatch it before LightningCLI parses anything; every other subcommand goes to LightningCLI unchanged.
        if isinstance(argv, (list, tuple)) and argv[:1] == ["compare"]:
            return compare.main(argv[1:])
        make_cli(args)
    except KeyboardInterrupt:  # Ctrl-C before the training loop started (loading images, weights): nothing to save
        if debug():
            raise
        sys.stderr.write("nst-pl: interrupted before training started; nothing was saved\n")
        raise SystemExit(130) from None
    except USER_ERRORS as exc:
        if debug():
            raise
        sys.stderr.write(f"nst-pl: error: {exc}\n(set {DEBUG_ENV}=1 to see the full traceback)\n")
        raise SystemExit(2) from None
    return None


if __name__ == "__main__":
    sys.exit(main())
