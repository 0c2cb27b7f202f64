"""Algorithm 1 with ``model.fit``: Baseline and Sliced-3D (ablations), Spatial (with auxiliary
losses), Temporal (clips of T, encoder from the Baseline), then Fusion over the two, frozen.

Every stage writes ``<run>/<stage>/``: ``backup.weights.h5`` (weights and optimizer state: a
killed run resumes inside the stage, at the optimizer's step), ``checkpoint.keras`` every N steps, ``history.csv``, TensorBoard logs, and on success
``model.keras`` (written atomically); a stage whose ``model.keras`` exists is loaded, not retrained.
"""
from __future__ import annotations

import contextlib
import logging
import os

import keras
import numpy as np
import tensorflow as tf

from keras_cadstn import fileio, models
from keras_cadstn.config import STAGES, STRATEGIES, CADSTNConfig, InputConfig, RandomAffine, TrainConfig
from keras_cadstn.data.pipeline import BAD_RECORD, make_dataset
from keras_cadstn.errors import ConfigError, DataError, TrainingError
from keras_cadstn.models.bundle import load_keras_model
from keras_cadstn.training.checkpoint import BACKUP, StepBackup, check_resume_step, restore_backup
from keras_cadstn.training.distributed import (WORKER_TIMEOUT_ENV, WorkerRole, cluster_resolver, fit_distributed,
                                               with_deadline, worker_role, worker_timeout, written_by)

logger = logging.getLogger(__name__)


def get_strategy(name: str):
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        resolver, seconds = cluster_resolver(), worker_timeout()
        return with_deadline(lambda: tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver), seconds,
                             f"the workers of the cluster did not all answer within {seconds:g} s (is every worker "
                             f"started, and can each reach the others?); {WORKER_TIMEOUT_ENV} sets the wait")
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


def fit_stage(model, train_ds, stage_dir: str, steps: int, cfg: TrainConfig, val_ds=None):
    """``model.fit`` for exactly ``steps`` optimizer steps with resumable backups, checkpoints, logs.

    Killed at any point (even SIGKILL), the same call resumes from the last backup (weights,
    optimizer state and step counter), whatever ``checkpoint_every`` the new call uses, and ends
    after ``steps`` steps in total. Fails (``TrainingError``) when the data gives fewer steps, and
    (``DataError``) on a record with NaN or out-of-range values.
    """
    os.makedirs(stage_dir, exist_ok=True)
    backup = os.path.join(stage_dir, BACKUP)
    done = restore_backup(model, backup)
    check_resume_step(done, steps, stage_dir)
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
    with record_errors():
        for epochs, per_epoch in ((full, period), (1 if rest else 0, rest)):
            if epochs and not model.stop_training:
                first = int(model.optimizer.iterations.numpy()) // period
                history = model.fit(train_ds, initial_epoch=first, epochs=first + epochs, steps_per_epoch=per_epoch,
                                    validation_data=val_ds, callbacks=callbacks, verbose=cfg.verbose)
    if history is not None and model.stop_training and not np.all(np.isfinite(history.history.get("loss", [0.0]))):
        raise TrainingError(f"{stage_dir}: loss became NaN/inf; training stopped, last backup kept in {backup} "
                            f"(try a lower --lr)")
    save_trained(model, stage_dir, steps)
    return history


GATE_START_WEIGHTS = tuple(np.round(np.linspace(0.0, 1.0, 21), 2))


def start_gate_at_best_constant(fusion, dataset, loss: str = "joint_distance", limit: float = 0.02) -> float:
    """Ours: set the untrained gate's last bias so that it starts at the one constant weight w of
    ``GATE_START_WEIGHTS`` whose fusion w J_temp + (1 - w) J_spa has the lowest ``loss`` (the fusion
    stage's: mean joint distance, or L2) on the gate's own training data; returns w (the logit is
    taken of w kept in [limit, 1 - limit]).

    The gate's last kernel starts at zero, so this is the weight for every input and coordinate:
    training starts from the best fixed fusion of that data (Table V's weight, as the fixed weight
    chosen on validation) and moves away only where the inputs tell it to. One weight, not one per
    coordinate: fitted per coordinate on a few validation sequences, the weights were noise that
    the test split paid for (docs/decisions.md).
    """
    fused = fusion.get_layer("joints")  # GatedFusion: [w1, J_temporal, J_spatial]
    predictions = keras.Model(fusion.inputs, fused.input[1:])
    totals = np.zeros(len(GATE_START_WEIGHTS))
    for inputs, y in dataset:
        t, s = (np.asarray(p, np.float64) for p in predictions.predict_on_batch(inputs))
        y = np.asarray(y, np.float64)
        for i, w in enumerate(GATE_START_WEIGHTS):
            diff = (w * t + (1 - w) * s - y).reshape(-1, 3)
            totals[i] += (np.sqrt((diff ** 2).sum(-1)) if loss == "joint_distance" else diff ** 2).sum()
    best = float(GATE_START_WEIGHTS[int(np.argmin(totals))])
    w = min(max(best, limit), 1.0 - limit)
    last = models.get_submodel(fusion, "gate_network").get_layer("joints")
    kernel, bias = last.get_weights()
    last.set_weights([kernel, np.full_like(bias, np.log(w / (1.0 - w)))])
    return best


def check_gives_a_batch(dataset, stage_dir: str) -> None:
    if not any(True for _ in dataset.take(1)):
        raise TrainingError(f"{stage_dir}: the training data gives no batch (no records, or every sequence "
                            f"shorter than the clip length); nothing trained")


@contextlib.contextmanager
def record_errors():
    """A record that fails the reader's checks (NaN, out of range) as a ``DataError`` naming it."""
    try:
        yield
    except tf.errors.InvalidArgumentError as e:
        if BAD_RECORD in e.message:
            what = e.message[e.message.index(BAD_RECORD):].splitlines()[0]
            raise DataError(what.replace("] [", " ").replace("[", "").replace("]", "")) from None
        raise


def save_trained(model, stage_dir: str, steps: int, role: WorkerRole = WorkerRole(None, 0, 1, True)) -> None:
    """``model.keras``, the mark of a finished stage, once the optimizer has done exactly ``steps``
    (a worker that is not the chief saves into a temporary folder: ``distributed.written_by``)."""
    trained = int(model.optimizer.iterations.numpy())
    if trained != steps:
        raise TrainingError(f"{stage_dir}: trained {trained} of {steps} steps: the training data ran out "
                            f"(no records, or sequences shorter than the clip length?); nothing saved as trained")
    with written_by(role, os.path.join(stage_dir, "model.keras"), ".keras") as path:
        model.save(path)


# what each stage reads: single frames, or clips of T consecutive frames
TRAIN_LOCK = ".train.lock"
STAGE_MODE = {"baseline": "frames", "sliced3d": "frames", "spatial": "frames", "temporal": "sequences",
              "fusion": "sequences"}


def stage_batch_size(cfg: TrainConfig, mcfg: CADSTNConfig, stage: str) -> int:
    """Examples per optimizer step: frames, or clips of T frames for the sequence stages."""
    return max(cfg.batch_size // mcfg.seq_len, 1) if STAGE_MODE[stage] == "sequences" else cfg.batch_size


def stage_input(pattern: str, stage: str, cfg: TrainConfig, mcfg: CADSTNConfig, training: bool = True,
                batch_size: int | None = None, num_shards: int = 1, shard_index: int = 0):
    """The dataset a stage trains (or validates) on; ``num_shards``/``shard_index``: a worker's share."""
    seq = STAGE_MODE[stage] == "sequences"
    return make_dataset(pattern, InputConfig(
        mode=STAGE_MODE[stage], seq_len=mcfg.seq_len, batch_size=batch_size or stage_batch_size(cfg, mcfg, stage),
        augment=cfg.augment and training, shuffle=cfg.shuffle and training,
        random_affine=RandomAffine(max_rotation=cfg.rotation) if cfg.rotation and training else None, repeat=training, seed=cfg.seed,
        window_shift=max(mcfg.seq_len // 4, 1) if (seq and training) else None, drop_remainder=training,
        output_names=tuple(models.LOSS_WEIGHTS) if stage == "spatial" else None,
        centre_motion=seq and mcfg.centre_motion, num_shards=num_shards,
        shard_index=shard_index))


# fine-tuning: the sub-model of a trained CADSTN each stage starts from (layers matched by name)
INIT_SOURCE = {"baseline": "temporal_network", "sliced3d": "spatial_network", "spatial": "spatial_network",
               "temporal": "temporal_network", "fusion": "gate_network"}


def build_stage(stage: str, mcfg: CADSTNConfig, cfg: TrainConfig, strategy=None, baseline=None, spatial=None,
                temporal=None, init=None):
    """A stage's network, compiled with its losses and optimizer in ``strategy``'s scope. ``baseline``
    initialises the temporal encoder (unless ``cfg.temporal_init`` is scratch); fusion needs the
    trained ``spatial`` and ``temporal`` networks; ``init``: a trained CADSTN to start from."""
    with (strategy or tf.distribute.get_strategy()).scope():
        if stage == "baseline":
            model = models.build_baseline_network(mcfg)
        elif stage == "sliced3d":
            model = models.build_sliced3d_network(mcfg)
        elif stage == "spatial":
            model = models.build_spatial_network(mcfg)
        elif stage == "temporal":
            model = models.build_temporal_network(mcfg)
            if baseline is not None and cfg.temporal_init != "scratch":
                models.init_encoder_from_baseline(model, baseline, freeze=cfg.temporal_init == "baseline_frozen")
        elif stage == "fusion":
            model = models.build_fusion_network(spatial, temporal, mcfg)
        else:
            raise ConfigError(f"unknown stage {stage!r}; expected one of {STAGES}")
        target = models.get_submodel(model, "gate_network") if stage == "fusion" else model  # fusion trains its gate
        if init is not None and not models.copy_matching_weights(target, models.get_submodel(init, INIT_SOURCE[stage])):
            raise ConfigError(f"the network to start from has no layer matching the {stage} stage's")
        spatial_outputs = stage == "spatial"
        loss = models.mean_joint_distance if stage == "fusion" and cfg.fusion_loss == "joint_distance" else "mse"
        model.compile(optimizer=make_optimizer(cfg, cfg.steps.get(stage, 1), stage),
                      loss={k: "mse" for k in models.LOSS_WEIGHTS} if spatial_outputs else loss,
                      loss_weights=models.LOSS_WEIGHTS if spatial_outputs else None, jit_compile=cfg.jit_compile,
                      steps_per_execution=cfg.steps_per_execution)
    return model


def load_stage(run_dir: str, stage: str, steps: int | None = None):
    """A stage trained earlier in ``run_dir``; ``steps``: it must have trained exactly that many."""
    final = os.path.join(run_dir, stage, "model.keras")
    model = load_keras_model(final)
    done = int(model.optimizer.iterations.numpy()) if model.optimizer is not None else None
    if steps is not None and done is not None and done != steps:
        raise ConfigError(f"{final}: trained {done} steps, this run asks for {steps}; use another run folder "
                          f"(or the same --steps)")
    return model


def train_cadstn(train_pattern: str, run_dir: str, mcfg: CADSTNConfig = CADSTNConfig(),
                 cfg: TrainConfig = TrainConfig(), stages=STAGES, val_pattern: str | None = None,
                 fusion_pattern: str | None = None, init=None) -> dict:
    """Run the requested stages in Algorithm 1's order; returns {stage: trained model}.

    ``fusion_pattern``: records the gate trains on (default: the training records, as the paper).
    Records the spatial and temporal networks have not seen (a validation split) show the gate
    how they err on new data instead of on data they fit.

    A stage finished earlier in ``run_dir`` (its ``model.keras`` exists) is loaded, not retrained;
    the stages a requested one builds on (temporal: the Baseline unless trained from scratch;
    fusion: spatial and temporal) come from this call or from ``run_dir``.

    ``init``: a trained CADSTN model (a preset's, ``load_preset(name).model``) every stage starts from
    (fine-tuning); the temporal stage then needs no Baseline.
    """
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; expected some of {STAGES}")
    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = get_strategy(cfg.strategy)
    busy = ConfigError(f"{run_dir}: another `cadstn train` is writing to this run folder; wait for it or "
                       f"choose another --run-dir")
    # the chief writes the run folder (the other workers only read it): it alone holds the lock
    with fileio.folder_lock(run_dir, TRAIN_LOCK, busy) if worker_role(strategy).is_chief else contextlib.nullcontext():
        return _train_stages(train_pattern, run_dir, mcfg, cfg, stages, val_pattern, fusion_pattern, strategy, init)


def _train_stages(train_pattern, run_dir, mcfg, cfg, stages, val_pattern, fusion_pattern, strategy, init) -> dict:
    trained = {}

    def prerequisite(stage):
        if stage in trained:
            return trained[stage]
        if os.path.isfile(os.path.join(run_dir, stage, "model.keras")):
            trained[stage] = load_stage(run_dir, stage)
            return trained[stage]
        raise ConfigError(f"this stage needs the trained {stage} stage: train it in the same run "
                          f"(--stages {stage} ...) or first, into {run_dir}")

    def run(stage, pattern=train_pattern, **prerequisites):
        final = os.path.join(run_dir, stage, "model.keras")
        if os.path.isfile(final):
            logger.info("[%s] already trained: loading %s", stage, final)
            return load_stage(run_dir, stage, cfg.steps[stage])
        print(f"[{stage}] training {cfg.steps[stage]} steps", flush=True)
        model = build_stage(stage, mcfg, cfg, strategy, init=init, **prerequisites)
        val = stage_input(val_pattern, stage, cfg, mcfg, training=False) if val_pattern else None
        stage_dir = os.path.join(run_dir, stage)

        def worker_input(batch_size=None, num_shards=1, shard_index=0):
            return stage_input(pattern, stage, cfg, mcfg, batch_size=batch_size, num_shards=num_shards,
                               shard_index=shard_index)
        with record_errors():  # on a dataset of its own: training starts on a fresh shuffle either way
            check_gives_a_batch(worker_input(), stage_dir)
            if stage == "fusion" and init is None:  # (a resumed stage then loads its trained gate from the backup)
                start_gate_at_best_constant(model, stage_input(pattern, stage, cfg, mcfg, training=False), cfg.fusion_loss)
        if cfg.strategy != "multiworker":
            fit_stage(model, worker_input(), stage_dir, cfg.steps[stage], cfg, val)
            return model
        os.makedirs(stage_dir, exist_ok=True)
        with record_errors():
            fit_distributed(model, worker_input, stage_batch_size(cfg, mcfg, stage), stage_dir, cfg.steps[stage],
                            cfg.checkpoint_every, strategy, val, verbose=cfg.verbose not in (0, "0"))
        save_trained(model, stage_dir, cfg.steps[stage], worker_role(strategy))
        return model

    for stage in STAGES:
        if stage not in stages:
            continue
        if stage == "temporal":
            from_baseline = cfg.temporal_init != "scratch" and init is None
            trained[stage] = run(stage, baseline=prerequisite("baseline") if from_baseline else None)
        elif stage == "fusion":
            trained[stage] = run(stage, pattern=fusion_pattern or train_pattern, spatial=prerequisite("spatial"),
                                 temporal=prerequisite("temporal"))
        else:
            trained[stage] = run(stage)
    return trained
