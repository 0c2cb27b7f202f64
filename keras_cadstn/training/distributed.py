"""Multi-worker training: ``tf.distribute.MultiWorkerMirroredStrategy`` with a loop of our own.

Keras 3's ``fit`` cannot run under this strategy: before its first step it reduces a data batch
across workers outside a ``tf.function``, which the collective ops refuse (keras-team/keras#20585,
open). This loop does what ``fit`` would, per step: every replica computes its loss with the model's
compiled losses (Keras scales it by 1 / replicas, so the sum over replicas is the global batch's
mean), the optimizer all-reduces the gradients (sum) and applies them on every replica.

What multi-worker needs, and how it is done here (docs/distributed.md tells users):
- data: every worker builds the same deterministic input pipeline and keeps its share of each
  global batch (``InputConfig.num_shards``), so N workers train on exactly one process's batches;
- files: every worker runs every save (the strategy's rule: a save may read synchronised
  variables); the chief writes into the run folder, the others into a temporary folder that is
  deleted at once;
- resume: all workers read the chief's backup from the run folder, which must be shared storage;
  they check that they agree on the step before training on;
- validation loss, logs and the progress bar: on the chief only.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_cadstn import fileio
from keras_cadstn.errors import ConfigError, TrainingError
from keras_cadstn.training.checkpoint import BACKUP, check_resume_step, restore_backup


def check_tf_config(text: str) -> dict:
    """``TF_CONFIG`` as TensorFlow needs it, or a one-line error: a JSON object whose ``cluster`` maps
    job names to lists of "host:port" and whose ``task`` names one of them by type and index."""
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"TF_CONFIG is not JSON ({e})") from None
    cluster, task = (config.get("cluster"), config.get("task")) if isinstance(config, dict) else (None, None)
    if not isinstance(cluster, dict) or not cluster or not all(
            isinstance(hosts, list) and hosts and all(isinstance(h, str) and ":" in h for h in hosts)
            for hosts in cluster.values()):
        raise ConfigError(f'TF_CONFIG needs "cluster": {{"worker": ["host:port", ...]}}, got {text!r}')
    if not isinstance(task, dict) or task.get("type") not in cluster or not isinstance(task.get("index"), int) \
            or not 0 <= task["index"] < len(cluster[task["type"]]):
        raise ConfigError(f'TF_CONFIG needs "task": {{"type": one of {sorted(cluster)}, "index": a position in its '
                          f"list}}, got {task!r}")
    return config


def cluster_resolver():
    """Where the cluster is described: ``TF_CONFIG`` (set by hand, or by Kubernetes' training
    operators), else a Slurm job step of several tasks (``srun``), else nowhere (one worker)."""
    if os.environ.get("TF_CONFIG"):
        check_tf_config(os.environ["TF_CONFIG"])
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
        # Slurm's resolver gives each task of a node its own GPUs and fails where there are none (no
        # nvidia-smi, or 0 GPUs): on CPU nodes it is told of one "GPU" per task and not to assign them
        tasks = max(int(n.split("(")[0]) for n in os.environ.get("SLURM_STEP_TASKS_PER_NODE", "1").split(","))
        gpus = {} if shutil.which("nvidia-smi") else {"gpus_per_node": tasks, "gpus_per_task": 1, "auto_set_gpu": False}
        return tf.distribute.cluster_resolver.SlurmClusterResolver(
            port_base=int(os.environ.get("KERAS_CADSTN_PORT_BASE", 8888)), **gpus)
    return None


@dataclasses.dataclass(frozen=True)
class WorkerRole:
    task_type: str | None
    task_id: int
    num_workers: int
    is_chief: bool


def worker_role(strategy) -> WorkerRole:
    """Who this process is in the cluster (from ``TF_CONFIG`` or another cluster resolver): the chief
    is task ``chief``, or worker 0 where the cluster has no chief; a process without a cluster is
    its own chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task_id = int(getattr(resolver, "task_id", None) or 0)
    jobs = resolver.cluster_spec().as_dict() if resolver is not None else {}
    workers = sum(len(tasks) for job, tasks in jobs.items() if job in ("chief", "worker")) or 1
    chief = task_type in (None, "chief") or (task_type == "worker" and task_id == 0 and "chief" not in jobs)
    return WorkerRole(task_type, task_id, workers, chief)


@contextlib.contextmanager
def written_by(role: WorkerRole, path: str, suffix: str):
    """A path to save to: the chief's is written atomically to ``path``; another worker's lies in a
    temporary folder that is removed when the block ends."""
    if role.is_chief:
        with fileio.atomic_path(path, suffix) as tmp:
            yield tmp
        return
    folder = tempfile.mkdtemp(prefix=f"cadstn-{role.task_type}{role.task_id}-")
    try:
        yield os.path.join(folder, os.path.basename(path))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def global_batch_size(batch_size: int, strategy) -> int:
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ConfigError(f"the global batch ({batch_size}) must be a multiple of the {replicas} replicas "
                          f"(workers x devices per worker)")
    return batch_size


def distribute_input(strategy, make_input, batch_size: int):
    """``make_input(batch_size, num_shards, shard_index)`` -> this worker's dataset, distributed; its
    replicas' batches together are the one-process batch of ``batch_size``."""
    global_batch_size(batch_size, strategy)

    def worker_dataset(context: tf.distribute.InputContext):
        return make_input(context.get_per_replica_batch_size(batch_size), context.num_input_pipelines,
                          context.input_pipeline_id)
    return strategy.distribute_datasets_from_function(worker_dataset)


def make_train_step(model, strategy):
    """One optimizer step on the next global batch; returns the global batch's mean loss."""
    def replica_step(x, y):
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)  # already / replicas
            scaled = model.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def train_step(iterator):
        x, y = next(iterator)
        return strategy.reduce("SUM", strategy.run(replica_step, args=(x, y)), axis=None)
    return train_step


def settings_digest(*settings) -> int:
    """A small integer (exact in float64 sums of squares) that differs when the settings differ."""
    return int(hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:5], 16)


def agree_on_step(strategy, done: int, settings: tuple = ()) -> None:
    """Every worker must resume from the same step (the same backup) and train with the same settings
    (``settings``: steps, batch size, the network's size...): checked across workers before the first step."""
    values = [float(done), float(settings_digest(*settings))]

    @tf.function
    def sums():  # all equal exactly when (sum x)^2 == n * sum x^2, element by element
        x = tf.constant(values, tf.float64)
        return strategy.reduce("SUM", strategy.run(lambda: tf.concat([x, x * x], 0)), axis=None)
    out = [float(v) for v in sums().numpy()]
    agree = [out[i] * out[i] == strategy.num_replicas_in_sync * out[i + 2] for i in range(2)]
    if not agree[1]:
        raise ConfigError(f"the workers were started with different settings (this one: {settings}): every worker must "
                          f"run the same command (steps, batch size, stages, network)")
    if not agree[0]:
        raise ConfigError(f"the workers resume from different steps (this one from {done}): the run folder must be "
                          f"storage that every worker reads (the chief's backups are the only ones kept)")


WORKER_TIMEOUT_ENV = "KERAS_CADSTN_WORKER_TIMEOUT"  # seconds to wait for every worker of TF_CONFIG (default 300)


# a separate process: TensorFlow's wait for the cluster holds the interpreter (no thread runs, SIGTERM
# is not handled), so only another process can end it
WATCHDOG = """
import os, select, signal, sys
pid, seconds, text = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
if not select.select([sys.stdin], [], [], seconds)[0]:
    os.write(2, text.encode() + b"\\n")
    os.kill(pid, signal.SIGKILL)
"""


def with_deadline(make, seconds: float, what: str):
    """``make()``, or after ``seconds`` ``cadstn: error: <what>`` on stderr and the process killed
    (exit status 137): TensorFlow waits forever for a worker of the cluster that never starts."""
    watchdog = subprocess.Popen([sys.executable, "-c", WATCHDOG, str(os.getpid()), str(seconds),
                                 f"cadstn: error: {what}"], stdin=subprocess.PIPE)
    try:
        return make()
    finally:
        watchdog.stdin.close()  # done in time: the watchdog wakes and leaves
        watchdog.wait()


def worker_timeout() -> float:
    text = os.environ.get(WORKER_TIMEOUT_ENV, "300")
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{WORKER_TIMEOUT_ENV} must be a number of seconds > 0, got {text!r}")
    return seconds


def validation_loss(model, val_ds) -> float:
    """The compiled loss over a (not distributed) validation dataset, weighted by batch size."""
    total, count = 0.0, 0
    for x, y in val_ds:
        n = int(keras.ops.shape(x)[0])
        total += float(model.compute_loss(x=x, y=y, y_pred=model(x, training=False), training=False)) * n
        count += n
    return total / max(count, 1)


def fit_distributed(model, make_input, batch_size: int, stage_dir: str, steps: int, checkpoint_every: int,
                    strategy, val_ds=None, verbose=True) -> dict:
    """Train ``model`` (compiled in ``strategy.scope()``) to ``steps`` optimizer steps in total, with
    the files ``train.fit_stage`` writes (history.csv, backup, checkpoint.keras, TensorBoard logs), so
    a stage resumes the same way whichever loop trained it. Returns {"loss": [per period]}."""
    role = worker_role(strategy)
    backup = os.path.join(stage_dir, BACKUP)
    done = restore_backup(model, backup)
    check_resume_step(done, steps, stage_dir)
    seconds = worker_timeout()
    with_deadline(lambda: agree_on_step(strategy, done, (os.path.basename(stage_dir), steps, batch_size,
                                                         checkpoint_every, model.count_params())), seconds,
                  f"{stage_dir}: a worker did not answer within {seconds:g} s; {WORKER_TIMEOUT_ENV} sets the wait")
    period = min(checkpoint_every, steps)
    train_step = make_train_step(model, strategy)
    iterator = iter(distribute_input(strategy, make_input, batch_size))
    writer = tf.summary.create_file_writer(os.path.join(stage_dir, "logs", "train")) if role.is_chief else None
    progress = keras.utils.Progbar(steps, verbose=1 if verbose and role.is_chief else 0)
    progress.update(done)
    history = {"loss": []}
    while done < steps:
        epoch, losses = done // period, []
        for _ in range(min(period, steps - done)):
            losses.append(float(train_step(iterator)))
            done += 1
            if not math.isfinite(losses[-1]):
                raise TrainingError(f"{stage_dir}: loss became NaN/inf at step {done}; training stopped, last backup "
                                    f"kept in {backup} (try a lower --lr)")
            progress.update(done, [("loss", losses[-1])])
        logs = {"loss": float(np.mean(losses))}
        if val_ds is not None and role.is_chief:
            logs["val_loss"] = validation_loss(model, val_ds)
        history["loss"].append(logs["loss"])
        if role.is_chief:  # the row before the backup, as fit_stage: a kill in between repeats it
            append_history_row(os.path.join(stage_dir, "history.csv"), epoch, logs)
            with writer.as_default():
                for name, value in logs.items():
                    tf.summary.scalar(f"epoch_{name}", value, step=done)
        with written_by(role, backup, ".weights.h5") as path:
            model.save_weights(path)
        with written_by(role, os.path.join(stage_dir, "checkpoint.keras"), ".keras") as path:
            model.save(path)
    return history


def append_history_row(path: str, epoch: int, logs: dict) -> None:
    """One row of ``history.csv`` in the columns Keras' CSVLogger writes (epoch, loss, val_loss)."""
    new = not os.path.isfile(path)
    with open(path, "a", newline="") as f:
        out = csv.writer(f)
        if new:
            out.writerow(["epoch", "loss", "val_loss"])
        out.writerow([epoch, logs["loss"], logs.get("val_loss", "NA")])
