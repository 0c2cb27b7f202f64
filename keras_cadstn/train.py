"""Algorithm 1 with ``model.fit``: Baseline and Sliced-3D (ablations), Spatial (with auxiliary
losses), Temporal (clips of T, encoder from the Baseline), then Fusion over the two, frozen.

Every stage writes ``<run>/<stage>/``: ``backup/`` (BackupAndRestore: a killed run resumes inside
the stage), ``checkpoint.keras`` every N steps, ``history.csv``, TensorBoard logs, and on success
``model.keras`` (written atomically); a stage whose ``model.keras`` exists is loaded, not retrained.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os

import keras
import numpy as np

from keras_cadstn import models
from keras_cadstn.models import CADSTNConfig

STAGES = ("baseline", "sliced3d", "spatial", "temporal", "fusion")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The paper's recipe by default (ARCHITECTURE.md, Training)."""

    steps: dict = dataclasses.field(default_factory=lambda: {"baseline": 60000, "sliced3d": 60000, "spatial": 60000,
                                                             "temporal": 60000, "fusion": 40000})
    batch_size: int = 128  # frames; sequence stages use batch_size // seq_len clips
    learning_rate: float = 1e-3
    decay_every: int = 20000
    decay_factor: float = 0.1
    # ours: Keras' Adam applies decoupled weight decay (AdamW-style); Caffe adds 5e-4 * w to the
    # gradient. Same coefficient, slightly different effect; Keras has no coupled decay in Adam.
    weight_decay: float = 5e-4
    checkpoint_every: int = 1000
    temporal_end_to_end: bool = False  # ours: default freezes the encoder copied from the Baseline
    mixed_precision: bool = False
    strategy: str = "default"
    seed: int = 0
    augment: bool = True  # the paper's NYU augmentation; off for ICVL
    # False: records in file order (reproducible across strategies; tf.distribute rebuilds a shuffled
    # pipeline, so a shuffled run under MirroredStrategy sees another, equally random, order)
    shuffle: bool = True
    verbose: int | str = "auto"


def get_strategy(name: str):
    import tensorflow as tf
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy must be default, mirrored or multiworker; got {name!r}")


def make_optimizer(cfg: TrainConfig, lr_scale: float = 1.0):
    schedule = keras.optimizers.schedules.ExponentialDecay(
        cfg.learning_rate * lr_scale, decay_steps=cfg.decay_every, decay_rate=cfg.decay_factor, staircase=True)
    return keras.optimizers.Adam(schedule, beta_1=0.9, beta_2=0.999, weight_decay=cfg.weight_decay)


def _save_atomic(model, path):
    tmp = path[:-len(".keras")] + ".tmp.keras"
    model.save(tmp)
    os.replace(tmp, path)


def checkpoint_period(steps: int, checkpoint_every: int) -> int:
    """Steps per Keras epoch: the largest divisor of ``steps`` not above ``checkpoint_every``.

    Keras' BackupAndRestore resumes at an epoch boundary (not mid-epoch), so epochs are the
    checkpoint unit: a killed run redoes at most one period and still ends at exactly ``steps``.
    """
    if steps < 1 or checkpoint_every < 1:
        raise ValueError(f"steps ({steps}) and checkpoint_every ({checkpoint_every}) must be >= 1")
    divisors = {d for i in range(1, math.isqrt(steps) + 1) if steps % i == 0 for d in (i, steps // i)}
    period = max(d for d in divisors if d <= checkpoint_every)
    if period < min(checkpoint_every, steps):
        print(f"note: checkpointing every {period} steps (the largest divisor of {steps} up to "
              f"{checkpoint_every}) so the run ends at exactly {steps}")
    return period


def _repair_backup(backup: str) -> None:
    """Keras writes training_metadata.json in place: a kill during that write leaves it unreadable
    (a JSONDecodeError Keras does not catch). Fall back to the previous state (double_checkpoint)."""
    meta = os.path.join(backup, "training_metadata.json")
    if not os.path.isfile(meta):
        return
    try:
        with open(meta) as f:
            json.load(f)
    except ValueError:
        previous = meta + ".bkp"
        if os.path.isfile(previous) and os.path.isfile(os.path.join(backup, "latest.weights.h5.bkp")):
            print(f"warning: {meta} is unreadable (interrupted write); resuming from the previous backup")
            os.replace(previous, meta)
            os.replace(os.path.join(backup, "latest.weights.h5.bkp"), os.path.join(backup, "latest.weights.h5"))
        else:
            print(f"warning: {meta} is unreadable and has no previous copy; restarting the stage")
            os.remove(meta)


def fit_stage(model, train_ds, stage_dir: str, steps: int, cfg: TrainConfig, val_ds=None):
    """``model.fit`` for exactly ``steps`` steps with resumable backups, checkpoints and logs.

    Killed at any point (even SIGKILL), the same call resumes from the last backup (weights,
    optimizer state and step counter) and still ends after ``steps`` optimizer steps in total.
    """
    os.makedirs(stage_dir, exist_ok=True)
    period = checkpoint_period(steps, cfg.checkpoint_every)
    backup = os.path.join(stage_dir, "backup")
    _repair_backup(backup)
    callbacks = [  # the CSV row of an epoch is written before its backup: a kill in between repeats
        # the row (same epoch number) rather than losing it
        keras.callbacks.CSVLogger(os.path.join(stage_dir, "history.csv"), append=True),
        keras.callbacks.BackupAndRestore(backup, save_freq="epoch", double_checkpoint=True, delete_checkpoint=False),
        keras.callbacks.ModelCheckpoint(os.path.join(stage_dir, "checkpoint.keras")),
        keras.callbacks.TensorBoard(os.path.join(stage_dir, "logs"), update_freq=max(period // 10, 1)),
        keras.callbacks.TerminateOnNaN(),
    ]
    history = model.fit(train_ds, epochs=steps // period, steps_per_epoch=period, validation_data=val_ds,
                        callbacks=callbacks, verbose=cfg.verbose)
    if model.stop_training and not np.all(np.isfinite(history.history.get("loss", [0.0]))):
        raise FloatingPointError(f"{stage_dir}: loss became NaN/inf; training stopped, last backup kept "
                                 f"in {stage_dir}/backup (try a lower --lr)")
    _save_atomic(model, os.path.join(stage_dir, "model.keras"))
    return history


def _dataset(pattern, mode, cfg: TrainConfig, mcfg: CADSTNConfig, output_names=None, training=True):
    from keras_cadstn.data import make_dataset
    seq = mode == "sequences"
    return make_dataset(pattern, mode=mode, seq_len=mcfg.seq_len,
                        batch_size=max(cfg.batch_size // mcfg.seq_len, 1) if seq else cfg.batch_size,
                        augment=cfg.augment and training, shuffle=cfg.shuffle and training, repeat=training, seed=cfg.seed,
                        window_shift=max(mcfg.seq_len // 4, 1) if (seq and training) else None,
                        drop_remainder=training, output_names=output_names)


def train_cadstn(train_pattern: str, run_dir: str, mcfg: CADSTNConfig = CADSTNConfig(),
                 cfg: TrainConfig = TrainConfig(), stages=STAGES, val_pattern: str | None = None) -> dict:
    """Run the requested stages in Algorithm 1's order; returns {stage: trained model}."""
    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(cfg.seed)
    strategy = get_strategy(cfg.strategy)
    trained = {}

    def run(stage, build, mode, loss, output_names=None, lr_scale=1.0):
        stage_dir = os.path.join(run_dir, stage)
        final = os.path.join(stage_dir, "model.keras")
        if os.path.isfile(final):
            print(f"[{stage}] already trained: loading {final}")
            return keras.models.load_model(final)
        print(f"[{stage}] training {cfg.steps[stage]} steps")
        with strategy.scope():
            model = build()
            model.compile(optimizer=make_optimizer(cfg, lr_scale), loss=loss,
                          loss_weights=models.LOSS_WEIGHTS if output_names else None)
        val = _dataset(val_pattern, mode, cfg, mcfg, output_names, training=False) if val_pattern else None
        fit_stage(model, _dataset(train_pattern, mode, cfg, mcfg, output_names), stage_dir, cfg.steps[stage], cfg, val)
        return model

    for stage in STAGES:
        if stage not in stages:
            continue
        if stage == "baseline":
            trained[stage] = run(stage, lambda: models.build_baseline_network(mcfg), "frames", "mse")
        elif stage == "sliced3d":
            trained[stage] = run(stage, lambda: models.build_sliced3d_network(mcfg), "frames", "mse")
        elif stage == "spatial":
            trained[stage] = run(stage, lambda: models.build_spatial_network(mcfg), "frames",
                                 {k: "mse" for k in models.LOSS_WEIGHTS}, output_names=list(models.LOSS_WEIGHTS))
        elif stage == "temporal":
            def build_temporal():
                t = models.build_temporal_network(mcfg)
                if "baseline" in trained and not cfg.temporal_end_to_end:
                    models.init_encoder_from_baseline(t, trained["baseline"], freeze=True)
                return t
            trained[stage] = run(stage, build_temporal, "sequences", "mse")
        elif stage == "fusion":
            missing = [s for s in ("spatial", "temporal") if s not in trained]
            if missing:
                raise ValueError(f"the fusion stage needs the trained {missing} stage(s) in the same run")
            trained[stage] = run(stage, lambda: models.build_fusion_network(trained["spatial"], trained["temporal"], mcfg),
                                 "sequences", "mse")
    return trained
