"""Algorithm 1 with ``model.fit``: Baseline and Sliced-3D (ablations), Spatial (with auxiliary
losses), Temporal (clips of T, encoder from the Baseline), then Fusion over the two, frozen.

Every stage writes ``<run>/<stage>/``: ``backup.weights.h5`` (weights and optimizer state: a
killed run resumes inside the stage, at the optimizer's step), ``checkpoint.keras`` every N steps, ``history.csv``, TensorBoard logs, and on success
``model.keras`` (written atomically); a stage whose ``model.keras`` exists is loaded, not retrained.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import warnings

import keras
import numpy as np

from keras_cadstn import atomic, models
from keras_cadstn.errors import ConfigError, DataError, TrainingError
from keras_cadstn.models import CADSTNConfig

STAGES = ("baseline", "sliced3d", "spatial", "temporal", "fusion")
STRATEGIES = ("default", "mirrored", "multiworker")
SCHEDULES = ("step", "cosine")
# How the temporal network's per-frame encoder starts: copied from the trained Baseline and frozen
# (the authors' released code), copied and trained on (fine-tuned), or trained from scratch with the
# LSTM (the paper's text).
TEMPORAL_INITS = ("baseline_frozen", "baseline_finetune", "scratch")
BACKUP = "backup.weights.h5"

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The paper's recipe by default (docs/architecture.md, Training)."""

    steps: dict = dataclasses.field(default_factory=lambda: {"baseline": 60000, "sliced3d": 60000, "spatial": 60000,
                                                             "temporal": 60000, "fusion": 40000})
    batch_size: int = 128  # frames; sequence stages use batch_size // seq_len clips
    learning_rate: float = 1e-3
    # ours: the fusion stage's rate (None: learning_rate). A sigmoid gate trained at 1e-3 can saturate
    # at one constant weight before it learns to tell inputs apart (tests/test_method.py shows it on
    # a toy problem; 3e-4 separates them there)
    fusion_learning_rate: float | None = None
    # "step": x decay_factor every decay_every steps (the paper: 0.1 every 20k); "cosine": from
    # learning_rate down to 0 over each stage's steps (any length of schedule, ours for short runs)
    schedule: str = "step"
    decay_every: int = 20000
    decay_factor: float = 0.1
    # ours: Keras' Adam applies decoupled weight decay (AdamW-style); Caffe adds 5e-4 * w to the
    # gradient. Same coefficient, slightly different effect; Keras has no coupled decay in Adam.
    weight_decay: float = 5e-4
    checkpoint_every: int = 1000
    temporal_init: str = "baseline_finetune"  # ours, measured: see README (the paper: scratch)
    mixed_precision: bool = False
    strategy: str = "default"
    seed: int = 0
    deterministic: bool = False  # deterministic TF ops: one seed reproduces on one machine
    augment: bool = True  # the paper's NYU augmentation; off for ICVL
    # False: records in file order (reproducible across strategies; tf.distribute rebuilds a shuffled
    # pipeline, so a shuffled run under MirroredStrategy sees another, equally random, order)
    shuffle: bool = True
    verbose: int | str = "auto"

    def __post_init__(self):
        for stage, n in self.steps.items():
            if stage not in STAGES or int(n) < 1:
                raise ConfigError(f"steps: every stage must be one of {STAGES} with >= 1 step, got {stage}={n}")
        for name in ("batch_size", "checkpoint_every", "decay_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        for name, allowed in (("schedule", SCHEDULES), ("temporal_init", TEMPORAL_INITS), ("strategy", STRATEGIES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


def get_strategy(name: str):
    import tensorflow as tf
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"strategy must be one of {STRATEGIES}; got {name!r}")


def learning_rate_schedule(cfg: TrainConfig, steps: int, stage: str = ""):
    """The learning rate as a function of the optimizer's step, for a stage of ``steps`` steps."""
    rate = cfg.fusion_learning_rate if stage == "fusion" and cfg.fusion_learning_rate else cfg.learning_rate
    if cfg.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(rate, decay_steps=steps, alpha=0.0)
    return keras.optimizers.schedules.ExponentialDecay(rate, decay_steps=cfg.decay_every,
                                                       decay_rate=cfg.decay_factor, staircase=True)


def make_optimizer(cfg: TrainConfig, steps: int, stage: str = ""):
    return keras.optimizers.Adam(learning_rate_schedule(cfg, steps, stage), beta_1=0.9, beta_2=0.999,
                                 weight_decay=cfg.weight_decay)


class StepBackup(keras.callbacks.Callback):
    """Weights and optimizer state (its step counter included) every checkpoint period, written
    atomically: a run killed at any point resumes from the last backup, by the optimizer's step."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        with atomic.atomic_path(self.path, ".weights.h5") as tmp:
            self.model.save_weights(tmp)


def restore_backup(model, path: str) -> int:
    """Load a stage's backup if there is one; returns the optimizer steps already done."""
    if os.path.isfile(path):
        model.optimizer.build(model.trainable_variables)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]kipping variable loading.*")
            model.load_weights(path)
        logger.info("resuming from %s at step %d", path, int(model.optimizer.iterations.numpy()))
    return int(model.optimizer.iterations.numpy())


def fit_stage(model, train_ds, stage_dir: str, steps: int, cfg: TrainConfig, val_ds=None):
    """``model.fit`` for exactly ``steps`` optimizer steps with resumable backups, checkpoints, logs.

    Killed at any point (even SIGKILL), the same call resumes from the last backup (weights,
    optimizer state and step counter), whatever ``checkpoint_every`` the new call uses, and ends
    after ``steps`` steps in total. Fails (``TrainingError``) when the data gives fewer steps, and
    (``DataError``) on a record with NaN or out-of-range values.
    """
    import tensorflow as tf
    from keras_cadstn.data.pipeline import BAD_RECORD

    os.makedirs(stage_dir, exist_ok=True)
    backup = os.path.join(stage_dir, BACKUP)
    done = restore_backup(model, backup)
    if done > steps:
        raise ConfigError(f"{stage_dir}: the backup is at step {done}, beyond the {steps} steps asked for; "
                          f"ask for at least {done} or use another run folder")
    period = min(cfg.checkpoint_every, steps)
    callbacks = [  # the CSV row of a period is written before its backup: a kill in between repeats
        # the row rather than losing it
        keras.callbacks.CSVLogger(os.path.join(stage_dir, "history.csv"), append=True),
        StepBackup(backup),
        keras.callbacks.ModelCheckpoint(os.path.join(stage_dir, "checkpoint.keras")),
        keras.callbacks.TensorBoard(os.path.join(stage_dir, "logs"), update_freq=max(period // 10, 1)),
        keras.callbacks.TerminateOnNaN(),
    ]
    full, rest = divmod(steps - done, period)
    history = None
    try:
        if done < steps and not any(True for _ in train_ds.take(1)):
            raise TrainingError(f"{stage_dir}: the training data gives no batch (no records, or every sequence "
                                f"shorter than the clip length); nothing trained")
        for epochs, per_epoch in ((full, period), (1 if rest else 0, rest)):
            if epochs and not model.stop_training:
                first = int(model.optimizer.iterations.numpy()) // period
                history = model.fit(train_ds, initial_epoch=first, epochs=first + epochs, steps_per_epoch=per_epoch,
                                    validation_data=val_ds, callbacks=callbacks, verbose=cfg.verbose)
    except tf.errors.InvalidArgumentError as e:
        if BAD_RECORD in e.message:
            what = e.message[e.message.index(BAD_RECORD):].splitlines()[0]
            raise DataError(what.replace("] [", " ").replace("[", "").replace("]", "")) from None
        raise
    if history is not None and model.stop_training and not np.all(np.isfinite(history.history.get("loss", [0.0]))):
        raise TrainingError(f"{stage_dir}: loss became NaN/inf; training stopped, last backup kept in {backup} "
                            f"(try a lower --lr)")
    trained = int(model.optimizer.iterations.numpy())
    if trained != steps:
        raise TrainingError(f"{stage_dir}: trained {trained} of {steps} steps: the training data ran out "
                            f"(no records, or sequences shorter than the clip length?); nothing saved as trained")
    _save_atomic(model, os.path.join(stage_dir, "model.keras"))
    return history


def _save_atomic(model, path):
    with atomic.atomic_path(path, ".keras") as tmp:
        model.save(tmp)


def _dataset(pattern, mode, cfg: TrainConfig, mcfg: CADSTNConfig, output_names=None, training=True):
    from keras_cadstn.data.pipeline import InputConfig, make_dataset
    seq = mode == "sequences"
    return make_dataset(pattern, InputConfig(
        mode=mode, seq_len=mcfg.seq_len, batch_size=max(cfg.batch_size // mcfg.seq_len, 1) if seq else cfg.batch_size,
        augment=cfg.augment and training, shuffle=cfg.shuffle and training, repeat=training, seed=cfg.seed,
        window_shift=max(mcfg.seq_len // 4, 1) if (seq and training) else None, drop_remainder=training,
        output_names=tuple(output_names) if output_names else None))


def load_stage(run_dir: str, stage: str, steps: int | None = None):
    """A stage trained earlier in ``run_dir``; ``steps``: it must have trained exactly that many."""
    from keras_cadstn.bundle import load_keras_model
    final = os.path.join(run_dir, stage, "model.keras")
    model = load_keras_model(final)
    done = int(model.optimizer.iterations.numpy()) if model.optimizer is not None else None
    if steps is not None and done is not None and done != steps:
        raise ConfigError(f"{final}: trained {done} steps, this run asks for {steps}; use another run folder "
                          f"(or the same --steps)")
    return model


def train_cadstn(train_pattern: str, run_dir: str, mcfg: CADSTNConfig = CADSTNConfig(),
                 cfg: TrainConfig = TrainConfig(), stages=STAGES, val_pattern: str | None = None,
                 fusion_pattern: str | None = None) -> dict:
    """Run the requested stages in Algorithm 1's order; returns {stage: trained model}.

    ``fusion_pattern``: records the gate trains on (default: the training records, as the paper).
    Records the spatial and temporal networks have not seen (a validation split) show the gate
    how they err on new data instead of on data they fit.

    A stage finished earlier in ``run_dir`` (its ``model.keras`` exists) is loaded, not retrained;
    the stages a requested one builds on (temporal: the Baseline unless trained from scratch;
    fusion: spatial and temporal) come from this call or from ``run_dir``.
    """
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; expected some of {STAGES}")
    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()
    strategy = get_strategy(cfg.strategy)
    trained = {}

    def prerequisite(stage):
        if stage in trained:
            return trained[stage]
        if os.path.isfile(os.path.join(run_dir, stage, "model.keras")):
            trained[stage] = load_stage(run_dir, stage)
            return trained[stage]
        raise ConfigError(f"this stage needs the trained {stage} stage: train it in the same run "
                          f"(--stages {stage} ...) or first, into {run_dir}")

    def run(stage, build, mode, loss, output_names=None, pattern=train_pattern):
        final = os.path.join(run_dir, stage, "model.keras")
        if os.path.isfile(final):
            logger.info("[%s] already trained: loading %s", stage, final)
            return load_stage(run_dir, stage, cfg.steps[stage])
        print(f"[{stage}] training {cfg.steps[stage]} steps", flush=True)
        with strategy.scope():
            model = build()
            model.compile(optimizer=make_optimizer(cfg, cfg.steps[stage], stage), loss=loss,
                          loss_weights=models.LOSS_WEIGHTS if output_names else None)
        val = _dataset(val_pattern, mode, cfg, mcfg, output_names, training=False) if val_pattern else None
        fit_stage(model, _dataset(pattern, mode, cfg, mcfg, output_names), os.path.join(run_dir, stage),
                  cfg.steps[stage], cfg, val)
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
            baseline = prerequisite("baseline") if cfg.temporal_init != "scratch" else None

            def build_temporal():
                t = models.build_temporal_network(mcfg)
                if baseline is not None:
                    models.init_encoder_from_baseline(t, baseline, freeze=cfg.temporal_init == "baseline_frozen")
                return t
            trained[stage] = run(stage, build_temporal, "sequences", "mse")
        elif stage == "fusion":
            spatial, temporal = prerequisite("spatial"), prerequisite("temporal")
            trained[stage] = run(stage, lambda: models.build_fusion_network(spatial, temporal, mcfg), "sequences", "mse",
                                 pattern=fusion_pattern or train_pattern)
    return trained
