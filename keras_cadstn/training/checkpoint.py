"""Checkpoints of a training stage: the step backup (weights and optimizer state) that a killed run resumes
from, and the checks that a resume is sound."""
from __future__ import annotations

import logging
import os
import warnings

import keras

from keras_cadstn import fileio
from keras_cadstn.errors import ConfigError

logger = logging.getLogger(__name__)


BACKUP = "backup.weights.h5"


class StepBackup(keras.callbacks.Callback):
    """Weights and optimizer state (its step counter included) every checkpoint period, written
    atomically: a run killed at any point resumes from the last backup, by the optimizer's step."""
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        with fileio.atomic_path(self.path, ".weights.h5") as tmp:
            self.model.save_weights(tmp)


def restore_backup(model, path: str) -> int:
    """Load a stage's backup if there is one; returns the optimizer steps already done."""
    # built with or without a backup: under a multi-worker strategy every worker creates the same
    # variables in the same order (variable creation is a collective op), whatever it finds on disk
    with model.distribute_strategy.scope():
        model.optimizer.build(model.trainable_variables)
    if os.path.isfile(path):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]kipping variable loading.*")
            model.load_weights(path)
        logger.info("resuming from %s at step %d", path, int(model.optimizer.iterations.numpy()))
    return int(model.optimizer.iterations.numpy())


def check_resume_step(done: int, steps: int, stage_dir: str) -> None:
    if done > steps:
        raise ConfigError(f"{stage_dir}: the backup is at step {done}, beyond the {steps} steps asked for; "
                          f"ask for at least {done} or use another run folder")
