"""The one nnU-Net trainer the baseline uses: nnU-Net's own ``nnUNetTrainer`` with the budget as fields.

Imported only inside the nnU-Net subprocesses (:mod:`.nnunet_run`, :mod:`.nnunet_curve`): it
imports torch and nnunetv2. The class is built directly (nnU-Net's trainer search by name imports
torchvision, which fails beside our CPU torch), hence ``plans["continue_training"]`` is set here.

Changes from ``nnUNetTrainer`` (everything else, loss, optimiser, augmentation, sampling, is nnU-Net's):

- ``num_epochs`` and ``num_iterations_per_epoch`` from the caller (nnU-Net: 1000 × 250);
  ``num_val_iterations_per_epoch`` keeps nnU-Net's ratio (50 per 250), at least 1.
- ``save_every`` from the caller (nnU-Net: 50), and checkpoints are written to a temporary file
  and renamed, so a process killed while saving leaves the previous checkpoint intact.
- The process CPU seconds of every epoch are logged beside nnU-Net's epoch timestamps
  (:data:`CPU_KEY`), so they travel inside the checkpoint and a resumed run keeps its clock.
- ``after_epoch(trainer) -> bool``, called once the epoch's checkpoint is written, may stop the
  training early (``True``); the final checkpoint is then written as nnU-Net does at its last epoch.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

#: logger key holding the process CPU seconds of each epoch (training + nnU-Net's validation iterations).
CPU_KEY = "cervicontour_epoch_cpu_s"


def trainer_class(*, num_epochs: int, iterations_per_epoch: int, save_every: int = 50,
                  after_epoch: Callable[[object], bool] | None = None) -> type:  # fmt: skip
    """nnU-Net's trainer with the changes listed in the module docstring."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class nnUNetTrainerCervicontour(nnUNetTrainer):
        def __init__(self, plans, configuration, fold, dataset_json, device=None):
            super().__init__(plans, configuration, fold, dataset_json, device=device or torch.device("cuda"))
            self.num_epochs = num_epochs
            self.num_iterations_per_epoch = iterations_per_epoch
            self.num_val_iterations_per_epoch = max(1, min(50, iterations_per_epoch // 5))
            self.save_every = save_every
            self.logger.local_logger.my_fantastic_logging[CPU_KEY] = []
            self._cpu_start = 0.0

        def on_epoch_start(self):
            self._cpu_start = time.process_time()
            super().on_epoch_start()

        def on_epoch_end(self):
            self.logger.log(CPU_KEY, time.process_time() - self._cpu_start, self.current_epoch)
            super().on_epoch_end()

        def save_checkpoint(self, filename: str) -> None:
            partial = f"{filename}.partial"
            super().save_checkpoint(partial)
            if os.path.isfile(partial):
                os.replace(partial, filename)

        def run_training(self):  # nnU-Net's loop, with a stop check after each epoch
            self.on_train_start()
            while self.current_epoch < self.num_epochs:
                self.on_epoch_start()
                self.on_train_epoch_start()
                outputs = [self.train_step(next(self.dataloader_train)) for _ in range(self.num_iterations_per_epoch)]
                self.on_train_epoch_end(outputs)
                with torch.no_grad():
                    self.on_validation_epoch_start()
                    outputs = [self.validation_step(next(self.dataloader_val)) for _ in range(self.num_val_iterations_per_epoch)]
                    self.on_validation_epoch_end(outputs)
                self.on_epoch_end()
                if after_epoch is not None and after_epoch(self):
                    break
            self.on_train_end()

    return nnUNetTrainerCervicontour


def build_trainer(preprocessed: str | os.PathLike, *, plans_name: str, configuration: str, fold: str, device: str,
                  continue_training: bool, **budget) -> object:  # fmt: skip
    """A :func:`trainer_class` trainer on one preprocessed dataset (``budget``: its keyword arguments)."""
    import torch

    pre = Path(preprocessed)
    plans = json.loads((pre / f"{plans_name}.json").read_text())
    plans["continue_training"] = continue_training  # what nnunetv2.run.run_training sets before building a trainer
    dataset_json = json.loads((pre / "dataset.json").read_text())
    cls = trainer_class(**budget)
    return cls(plans, configuration, fold if fold == "all" else int(fold), dataset_json, device=torch.device(device))


def training_clock(trainer) -> dict:
    """Cumulative training seconds of the trainer's finished epochs (restored with its checkpoint).

    Returns:
        ``{"epochs": n, "iterations": n × iterations per epoch, "wall_s": Σ epoch end - start,
        "cpu_s": Σ epoch process CPU}``; ``cpu_s`` is None for epochs logged without it.
    """
    logged = trainer.logger.get_value
    starts, ends = logged("epoch_start_timestamps", None), logged("epoch_end_timestamps", None)
    cpu = trainer.logger.local_logger.my_fantastic_logging.get(CPU_KEY, [])
    epochs = min(len(starts), len(ends))
    return {
        "epochs": epochs,
        "iterations": epochs * trainer.num_iterations_per_epoch,
        "wall_s": float(sum(e - s for s, e in zip(starts[:epochs], ends[:epochs]))),
        "cpu_s": float(sum(cpu[:epochs])) if len(cpu) >= epochs else None,
    }
