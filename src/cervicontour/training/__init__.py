"""Training: from a labelled cohort to a validated model (``fit``), and what it is made of.

The training loop (:mod:`.train`: data, augmentation, run folder, checkpoints, DDP), its
configuration (:mod:`.train_config`), the run record and log (:mod:`.run_files`) and transfer of
weights from a source model (:mod:`.transfer`) sit under ``fit``.

``fit`` (the hospital's path) drives the trainer (:mod:`cervicontour.training.train`) and the second
stage (:mod:`cervicontour.networks.refine`) through its stages; :mod:`.targets` decides what each
output channel trains on, :mod:`.selection` scores and chooses, :mod:`.card` writes the card.
Nothing heavy is imported here.
"""

from cervicontour.training.config import FitConfig, load_fit_config
from cervicontour.training.fit import FIT_SCHEMA, FitRecord, FitResult, fit, read_fit_record

__all__ = ["FIT_SCHEMA", "FitConfig", "FitRecord", "FitResult", "fit", "load_fit_config", "read_fit_record"]
