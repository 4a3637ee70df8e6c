"""A callback that prints the wall-clock time of the first optimisation step (used by bench/overhead.py)."""

import time

import pytorch_lightning as pl


class FirstStepStamp(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 0:
            print(f"FIRST_STEP_AT {time.time():.3f}", flush=True)
