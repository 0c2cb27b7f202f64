"""Multi-worker training with real worker processes on localhost (TF_CONFIG, gRPC collectives).

Dropout is off in these networks: a replica draws its own dropout masks, so with dropout the
workers' losses match one process in distribution only. Shuffling and augmentation stay on: the
input pipeline gives every worker its share of the one-process batches, augmented the same way.
"""
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from keras_cadstn.errors import ConfigError

WORKER = textwrap.dedent("""
    import json, logging, os, sys
    records, run_dir, index, ports, steps, every = sys.argv[1:7]
    index = int(index)
    if index >= 0:
        os.environ["TF_CONFIG"] = json.dumps({
            "cluster": {"worker": [f"localhost:{p}" for p in ports.split(",")]},
            "task": {"type": "worker", "index": index}})
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from keras_cadstn.config import CADSTNConfig, TrainConfig
    from keras_cadstn.training.stages import train_cadstn
    mcfg = CADSTNConfig(image_size=32, seq_len=4, fc_units=16, lstm_units=8, dropout=0.0, lstm_dropout=0.0)
    cfg = TrainConfig(steps={"baseline": int(steps)}, batch_size=8, checkpoint_every=int(every), verbose=0,
                      strategy="multiworker" if index >= 0 else "default", schedule="cosine")
    train_cadstn(os.path.join(records, "train", "*.tfrecord"), run_dir, mcfg, cfg, stages=("baseline",))
    print("finished", index, flush=True)
""")
TIMEOUT = 300


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ",".join(map(str, ports))


def start(records, run_dir, index, ports, steps, every, log):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-c", WORKER, records, str(run_dir), str(index), ports, str(steps),
                             str(every)], stdout=log, stderr=subprocess.STDOUT, env=env)


def run_workers(records, run_dir, steps, every, logs_dir, tag):
    ports = free_ports(2)
    logs = [open(os.path.join(logs_dir, f"{tag}-worker{i}.log"), "w") for i in range(2)]
    procs = [start(records, run_dir, i, ports, steps, every, logs[i]) for i in range(2)]
    return procs, logs


def finish(procs, logs):
    for p in procs:
        p.wait(timeout=TIMEOUT)
    for f in logs:
        f.close()
    texts = [open(f.name).read() for f in logs]
    for p, text in zip(procs, texts):
        assert p.returncode == 0, text[-3000:]
    return texts


def one_process(records, run_dir, steps, every, logs_dir):
    with open(os.path.join(logs_dir, f"one-{os.path.basename(run_dir)}.log"), "w") as log:
        p = start(records, run_dir, -1, "", steps, every, log)
        p.wait(timeout=TIMEOUT)
    text = open(log.name).read()
    assert p.returncode == 0, text[-3000:]
    return text


def losses(run_dir):
    """history.csv as {epoch: loss}; a row repeated after a kill counts once (the last one)."""
    with open(os.path.join(run_dir, "baseline", "history.csv")) as f:
        return {int(r["epoch"]): float(r["loss"]) for r in csv.DictReader(f)}


def optimizer_steps(run_dir):
    import keras
    return int(keras.models.load_model(os.path.join(run_dir, "baseline", "model.keras")).optimizer.iterations.numpy())


@pytest.mark.slow
def test_two_workers_reproduce_one_process_losses(synth_records, tmp_path):
    procs, logs = run_workers(synth_records, tmp_path / "two", 10, 1, tmp_path, "run")
    one_process(synth_records, tmp_path / "one", 10, 1, tmp_path)
    finish(procs, logs)
    two, one = losses(tmp_path / "two"), losses(tmp_path / "one")
    assert sorted(two) == sorted(one) == list(range(10))  # one row per step, from the chief only
    assert one[9] < one[0]  # it trains
    np.testing.assert_allclose([two[e] for e in range(10)], [one[e] for e in range(10)], rtol=0, atol=1e-4)
    assert optimizer_steps(tmp_path / "two") == optimizer_steps(tmp_path / "one") == 10
    assert not [p for p in os.listdir(tmp_path / "two" / "baseline") if ".tmp" in p]


@pytest.mark.slow
def test_killed_worker_resumes(synth_records, tmp_path):
    steps, every = 200, 4
    run = tmp_path / "two"
    backup = run / "baseline" / "backup.weights.h5"
    procs, logs = run_workers(synth_records, run, steps, every, tmp_path, "killed")
    deadline = time.time() + TIMEOUT
    while not backup.exists():  # the chief's first backup: kill worker 1 while training goes on
        assert time.time() < deadline and procs[0].poll() is None, open(logs[0].name).read()[-3000:]
        time.sleep(0.02)
    procs[1].send_signal(signal.SIGKILL)
    procs[0].send_signal(signal.SIGKILL)  # its peer is gone: the chief would wait on the collectives
    for p in procs:
        p.wait(timeout=60)
    assert not (run / "baseline" / "model.keras").exists()  # killed before the end
    # a one-process run continues from the same backup: the restarted workers must match it
    shutil.copytree(run / "baseline", tmp_path / "one" / "baseline",
                    ignore=lambda d, names: [n for n in names if n != "backup.weights.h5"])
    procs, logs = run_workers(synth_records, run, steps, every, tmp_path, "restarted")
    one_text = one_process(synth_records, tmp_path / "one", steps, every, tmp_path)
    texts = finish(procs, logs)
    resumed = [int(line.rsplit(" ", 1)[1]) for line in one_text.splitlines() if "resuming from" in line]
    assert len(resumed) == 1 and 0 < resumed[0] < steps and resumed[0] % every == 0
    for text in texts:  # both workers restored the chief's backup
        assert f"at step {resumed[0]}" in text, text[-2000:]
    assert optimizer_steps(run) == optimizer_steps(tmp_path / "one") == steps
    two, one = losses(run), losses(tmp_path / "one")
    after = [e for e in sorted(one) if e >= resumed[0] // every]
    assert after and after[-1] == steps // every - 1
    np.testing.assert_allclose([two[e] for e in after], [one[e] for e in after], rtol=0, atol=1e-4)


@pytest.mark.slow
def test_workers_that_disagree_on_the_resume_step_refuse(synth_records, tmp_path):
    """A run folder that is not shared: worker 1 finds no backup where the chief finds one."""
    one_process(synth_records, tmp_path / "seed", 4, 2, tmp_path)
    for i in range(2):
        (tmp_path / f"w{i}" / "baseline").mkdir(parents=True)
    shutil.copy(tmp_path / "seed" / "baseline" / "backup.weights.h5", tmp_path / "w0" / "baseline")
    ports = free_ports(2)
    logs = [open(tmp_path / f"disagree{i}.log", "w") for i in range(2)]
    procs = [start(synth_records, tmp_path / f"w{i}", i, ports, 8, 2, logs[i]) for i in range(2)]
    for p in procs:
        p.wait(timeout=TIMEOUT)
    texts = [open(f.name).read() for f in logs]
    for p, text in zip(procs, texts):
        assert p.returncode != 0 and "resume from different steps" in text, text[-2000:]


def test_global_batch_must_split_over_replicas():
    from keras_cadstn.training.distributed import global_batch_size

    class ThreeReplicas:
        num_replicas_in_sync = 3
    assert global_batch_size(9, ThreeReplicas()) == 9
    with pytest.raises(ConfigError, match="multiple of the 3 replicas"):
        global_batch_size(8, ThreeReplicas())


def test_chief_is_worker_zero_or_the_chief_task(monkeypatch):
    from keras_cadstn.training.distributed import worker_role

    class Resolver:
        def __init__(self, cluster, task_type, task_id):
            self.task_type, self.task_id, self._cluster = task_type, task_id, cluster

        def cluster_spec(self):
            class Spec:
                def as_dict(_):
                    return self._cluster
            return Spec()

    class Strategy:
        def __init__(self, resolver):
            self.cluster_resolver = resolver
    workers = {"worker": ["a:1", "b:1"]}
    with_chief = {"chief": ["c:1"], "worker": ["a:1", "b:1"]}
    assert worker_role(Strategy(Resolver(workers, "worker", 0))).is_chief
    assert not worker_role(Strategy(Resolver(workers, "worker", 1))).is_chief
    assert not worker_role(Strategy(Resolver(with_chief, "worker", 0))).is_chief
    role = worker_role(Strategy(Resolver(with_chief, "chief", 0)))
    assert role.is_chief and role.num_workers == 3
    assert worker_role(Strategy(None)).is_chief  # no cluster: a process of its own


def test_cluster_from_tf_config_or_a_slurm_step(monkeypatch):
    from keras_cadstn.training.distributed import cluster_resolver
    for name in [k for k in os.environ if k.startswith("SLURM_") or k == "TF_CONFIG"]:
        monkeypatch.delenv(name)
    assert cluster_resolver() is None  # one worker
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_STEP_NODELIST", "node[07-08]")
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", "2(x2)")
    monkeypatch.setenv("KERAS_CADSTN_PORT_BASE", "9000")
    slurm = cluster_resolver()
    assert slurm.cluster_spec().as_dict() == {"worker": ["node07:9000", "node07:9001", "node08:9000", "node08:9001"]}
    assert (slurm.task_type, slurm.task_id) == ("worker", 3)
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}')
    by_hand = cluster_resolver()  # TF_CONFIG wins
    assert by_hand.cluster_spec().as_dict() == {"worker": ["a:1", "b:2"]} and by_hand.task_id == 1


@pytest.mark.slow
def test_cadstn_train_with_two_workers(synth_records, tmp_path):
    """The command line path: `cadstn train --strategy multiworker` in two processes."""
    ports = free_ports(2).split(",")
    run = tmp_path / "run"
    procs = []
    for i in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_CONFIG=json.dumps(
            {"cluster": {"worker": [f"localhost:{p}" for p in ports]}, "task": {"type": "worker", "index": i}}))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "keras_cadstn.cli", "train", "--records", synth_records, "--run-dir", str(run),
             "--strategy", "multiworker", "--stages", "baseline", "--steps", "4", "--batch-size", "8",
             "--checkpoint-every", "2", "--seq-len", "4"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=env))
    outputs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    assert optimizer_steps(run) == 4
    assert sorted(losses(run)) == [0, 1]  # two checkpoint periods, one row each, from the chief


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "needs \"cluster\""),
    ("{not json", "not JSON"),
    ('{"cluster": {"worker": ["localhost:1"]}}', "needs \"task\""),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 1}}', "needs \"task\""),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}', "needs \"cluster\""),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "ps", "index": 0}}', "needs \"task\""),
])
def test_malformed_tf_config_is_refused_in_one_line(monkeypatch, text, message):
    from keras_cadstn.training.distributed import check_tf_config, cluster_resolver
    monkeypatch.setenv("TF_CONFIG", text)
    with pytest.raises(ConfigError, match=message):
        cluster_resolver()
    assert check_tf_config('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}')["task"]["index"] == 1


@pytest.mark.slow
def test_workers_started_with_different_steps_refuse_before_training(synth_records, tmp_path):
    ports = free_ports(2)
    logs = [open(tmp_path / f"steps{i}.log", "w") for i in range(2)]
    procs = [start(synth_records, tmp_path / "run", i, ports, steps, 2, logs[i]) for i, steps in enumerate((8, 6))]
    for p in procs:
        p.wait(timeout=TIMEOUT)
    texts = [open(f.name).read() for f in logs]
    for p, text in zip(procs, texts):
        assert p.returncode != 0 and "started with different settings" in text, text[-2000:]
    assert not (tmp_path / "run" / "baseline" / "model.keras").exists()


@pytest.mark.slow
def test_a_worker_whose_peer_never_starts_fails_within_the_timeout(synth_records, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_CADSTN_WORKER_TIMEOUT", "10")
    with open(tmp_path / "alone.log", "w") as log:
        begun = time.time()
        p = start(synth_records, tmp_path / "run", 0, free_ports(2), 4, 2, log)
        p.wait(timeout=TIMEOUT)
    text = open(log.name).read()
    assert p.returncode == -9 and time.time() - begun < 120, text[-2000:]  # killed: TensorFlow holds the interpreter
    errors = [line for line in text.splitlines() if "error:" in line]
    assert errors == ["cadstn: error: the workers of the cluster did not all answer within 10 s (is every worker "
                      "started, and can each reach the others?); KERAS_CADSTN_WORKER_TIMEOUT sets the wait"]


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_a_bad_worker_timeout_is_refused(monkeypatch, value):
    from keras_cadstn.training.distributed import worker_timeout
    monkeypatch.setenv("KERAS_CADSTN_WORKER_TIMEOUT", value)
    with pytest.raises(ConfigError, match="KERAS_CADSTN_WORKER_TIMEOUT must be a number of seconds > 0"):
        worker_timeout()
