import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

from keras_cadstn.config import STAGES, CADSTNConfig, TrainConfig
from keras_cadstn.models import build_fusion_network, build_spatial_network, build_temporal_network
from keras_cadstn.training.stages import learning_rate_schedule, train_cadstn

TINY = CADSTNConfig(image_size=32, seq_len=4, fc_units=16, lstm_units=8, dropout=0.0, lstm_dropout=0.0)


def _history(stage_dir):
    with open(os.path.join(stage_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


def test_learning_rate_schedules():
    step = learning_rate_schedule(TrainConfig(learning_rate=1e-3, decay_every=20000, decay_factor=0.1), 60000)
    for it, lr in ((0, 1e-3), (19999, 1e-3), (20000, 1e-4), (45000, 1e-5)):  # the paper: x0.1 every 20k
        assert float(step(it)) == pytest.approx(lr, rel=1e-6)
    cosine = learning_rate_schedule(TrainConfig(learning_rate=2e-3, schedule="cosine"), 400)
    for it, lr in ((0, 2e-3), (100, 1e-3 * (1 + np.cos(np.pi / 4))), (200, 1e-3), (400, 0.0)):
        assert float(cosine(it)) == pytest.approx(lr, rel=1e-5, abs=1e-9)
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainConfig(schedule="linear")


def test_rotation_turns_training_crops_and_joints_in_the_image_plane(synth_records):
    """``TrainConfig.rotation``: each training frame turned by a random angle, its joints with it (their
    depth unchanged, their distance from the crop's centre nearly so); validation data never."""
    from keras_cadstn.training.stages import stage_input
    pattern = os.path.join(synth_records, "train", "*.tfrecord")
    base = dict(steps={"baseline": 1}, batch_size=16, augment=False, shuffle=False)
    take = lambda cfg, training=True: next(iter(stage_input(pattern, "baseline", cfg, TINY, training=training)))  # noqa: E731
    (x0, y0), (x1, y1) = take(TrainConfig(**base)), take(TrainConfig(**base, rotation=180.0))
    j0, j1 = y0.numpy().reshape(16, -1, 3), y1.numpy().reshape(16, -1, 3)
    assert np.mean(np.abs(x0.numpy() - x1.numpy()) > 0.01) > 0.02  # the crops turned
    np.testing.assert_allclose(j1[..., 2], j0[..., 2], atol=1e-5)  # in the image plane only
    r0, r1 = np.linalg.norm(j0[..., :2], axis=-1), np.linalg.norm(j1[..., :2], axis=-1)
    np.testing.assert_allclose(r1, r0, rtol=0.25)  # nearly: an off-axis crop's perspective changes them up to ~20%
    angles = np.degrees(np.arctan2(j1[:, 0, 1], j1[:, 0, 0]) - np.arctan2(j0[:, 0, 1], j0[:, 0, 0])) % 360
    assert np.ptp(angles) > 90  # random angles, not one
    xv, _ = take(TrainConfig(**base, rotation=180.0), training=False)
    np.testing.assert_array_equal(xv.numpy(), x0.numpy())
    with pytest.raises(ValueError, match=r"rotation in \[0, 180\]"):
        TrainConfig(rotation=270.0)


def test_mean_joint_distance_loss_by_hand():
    from keras_cadstn.models import mean_joint_distance
    y_true = np.zeros((2, 1, 6), np.float32)
    y_pred = np.array([[[3, 4, 0, 0, 0, 0]], [[0, 0, 1, 0, 0, 0]]], np.float32)  # distances 5, 0, 1, 0
    assert float(mean_joint_distance(y_true, y_pred)) == pytest.approx(1.5, abs=1e-4)
    with pytest.raises(ValueError, match="fusion_loss must be one of"):
        TrainConfig(fusion_loss="l1")


@pytest.mark.slow
def test_fusion_loss_is_reported_with_compiled_submodels(rng):
    """Regression: a compiled (e.g. loaded) sub-model's own 'loss' tracker used to overwrite the
    fusion model's loss in fit/evaluate logs with 0.0."""
    spatial, temporal = build_spatial_network(TINY), build_temporal_network(TINY)
    for m in (spatial, temporal):
        m.compile(optimizer="adam", loss="mse")
    fusion = build_fusion_network(spatial, temporal, TINY)
    fusion.compile(optimizer="adam", loss="mse")
    x = rng.uniform(-1, 1, (2, 4, 32, 32, 1)).astype("float32")
    y = rng.normal(size=(2, 4, 42)).astype("float32")
    expected = float(np.mean((fusion.predict_on_batch(x) - y) ** 2))
    assert expected > 0.1
    np.testing.assert_allclose(fusion.evaluate(x, y, verbose=0), expected, rtol=1e-5)
    np.testing.assert_allclose(fusion.train_on_batch(x, y), expected, rtol=1e-5)


@pytest.mark.slow
def test_all_stages_train_log_and_resume_by_loading(synth_records, tmp_path):
    steps = {"baseline": 4, "sliced3d": 2, "spatial": 4, "temporal": 4, "fusion": 4}
    cfg = TrainConfig(steps=steps, batch_size=16, checkpoint_every=2, verbose=0, augment=True,
                      temporal_init="baseline_frozen")
    pattern = os.path.join(synth_records, "train", "*.tfrecord")
    run = str(tmp_path / "run")
    trained = train_cadstn(pattern, run, TINY, cfg)
    assert set(trained) == set(STAGES)
    for stage in STAGES:
        d = os.path.join(run, stage)
        for name in ("model.keras", "checkpoint.keras", "history.csv", "backup.weights.h5"):
            assert os.path.exists(os.path.join(d, name)), f"{stage}: {name} missing"
        assert os.listdir(os.path.join(d, "logs")), f"{stage}: no TensorBoard logs"
        rows = _history(d)
        assert [int(r["epoch"]) for r in rows] == list(range(steps[stage] // 2))  # one row per checkpoint period
        losses = [float(r["loss"]) for r in rows]
        assert all(np.isfinite(losses)) and min(losses) > 0, f"{stage}: loss {losses}"
        saved = keras.models.load_model(os.path.join(d, "model.keras"))
        assert int(saved.optimizer.iterations.numpy()) == steps[stage]
    # the encoder of the temporal network comes from the trained Baseline and stays frozen
    enc = trained["temporal"].get_layer("frame_encoder").layer
    np.testing.assert_array_equal(enc.get_layer("conv1").get_weights()[0],
                                  trained["baseline"].get_layer("conv1").get_weights()[0])
    assert not enc.trainable
    # a finished stage is loaded, not retrained
    mtime = os.path.getmtime(os.path.join(run, "spatial", "model.keras"))
    again = train_cadstn(pattern, run, TINY, cfg, stages=("spatial",))
    assert os.path.getmtime(os.path.join(run, "spatial", "model.keras")) == mtime
    x = np.zeros((1, 32, 32, 1), np.float32)
    np.testing.assert_allclose(again["spatial"].predict_on_batch(x)["joints"],
                               trained["spatial"].predict_on_batch(x)["joints"], atol=1e-6)


def test_fusion_without_its_substages_is_refused(synth_records, tmp_path):
    with pytest.raises(ValueError, match="needs the trained spatial stage"):
        train_cadstn(os.path.join(synth_records, "train", "*.tfrecord"), str(tmp_path), TINY,
                     TrainConfig(steps=dict.fromkeys(STAGES, 2), verbose=0), stages=("fusion",))


@pytest.mark.slow
def test_sigkill_mid_run_resumes_from_the_last_checkpoint(synth_records, tmp_path):
    steps, every = 400, 10
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "keras_cadstn.cli", "train", "--records", synth_records, "--run-dir", str(run),
           "--stages", "baseline", "--steps", str(steps), "--checkpoint-every", str(every), "--batch-size", "8",
           "--seq-len", "4"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    history = run / "baseline" / "history.csv"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows_at_kill = 0
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            try:
                rows_at_kill = len(history.read_text().splitlines()) - 1
            except OSError:
                rows_at_kill = 0
            if rows_at_kill >= 3 and (run / "baseline" / "backup.weights.h5").exists():
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the training finished before it could be killed"
    assert not (run / "baseline" / "model.keras").exists()
    assert rows_at_kill < steps // every

    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Epoch 1/" not in out.stdout  # it did not start from scratch
    model = keras.models.load_model(run / "baseline" / "model.keras")
    assert int(model.optimizer.iterations.numpy()) == steps  # exactly the requested steps in total
    epochs = [int(r["epoch"]) for r in _history(run / "baseline")]
    assert set(epochs) == set(range(steps // every))


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from keras_cadstn.config import CADSTNConfig
    from keras_cadstn.config import TrainConfig
    from keras_cadstn.training.stages import train_cadstn
    records, out = sys.argv[1], sys.argv[2]
    mcfg = CADSTNConfig(image_size=32, seq_len=4, fc_units=16, lstm_units=8, dropout=0.0, lstm_dropout=0.0)
    losses = {}
    for strategy in ("default", "mirrored"):
        cfg = TrainConfig(steps={"baseline": 12}, batch_size=16, checkpoint_every=3, strategy=strategy,
                          augment=False, shuffle=False, verbose=0)
        model = train_cadstn(os.path.join(records, "train", "*.tfrecord"), os.path.join(out, strategy), mcfg, cfg,
                             stages=("baseline",))["baseline"]
        import csv
        with open(os.path.join(out, strategy, "baseline", "history.csv")) as f:
            losses[strategy] = [float(r["loss"]) for r in csv.DictReader(f)]
    print(json.dumps({"losses": losses, "replicas": len(tf.config.list_logical_devices("CPU"))}))
""")


def run_script(script: str, *args) -> dict:
    """A training script in a fresh process (its own TensorFlow set-up); the JSON of its last line."""
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_mirrored_strategy_over_two_cpus_matches_single_device(synth_records, tmp_path):
    result = run_script(MIRRORED_SCRIPT, synth_records, str(tmp_path))
    assert result["replicas"] == 2
    single, mirrored = result["losses"]["default"], result["losses"]["mirrored"]
    assert len(single) == len(mirrored) == 4
    assert single[-1] < single[0]  # it trains
    np.testing.assert_allclose(mirrored, single, rtol=1e-5)


DETERMINISTIC_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from keras_cadstn.config import CADSTNConfig
    from keras_cadstn.config import TrainConfig
    from keras_cadstn.training.stages import train_cadstn
    records, out = sys.argv[1], sys.argv[2]
    mcfg = CADSTNConfig(image_size=32, seq_len=4, fc_units=16, lstm_units=8)
    weights = []
    for run in ("a", "b"):
        cfg = TrainConfig(steps={"baseline": 6}, batch_size=8, checkpoint_every=3, seed=7, deterministic=True,
                          verbose=0)  # shuffled and augmented, dropout on
        model = train_cadstn(os.path.join(records, "train", "*.tfrecord"), os.path.join(out, run), mcfg, cfg,
                             stages=("baseline",))["baseline"]
        weights.append(model.get_layer("joints").get_weights()[0])
    other = TrainConfig(steps={"baseline": 6}, batch_size=8, checkpoint_every=3, seed=8, deterministic=True, verbose=0)
    w8 = train_cadstn(os.path.join(records, "train", "*.tfrecord"), os.path.join(out, "c"), mcfg, other,
                      stages=("baseline",))["baseline"].get_layer("joints").get_weights()[0]
    print(json.dumps({"same_seed": float(np.abs(weights[0] - weights[1]).max()),
                      "other_seed": float(np.abs(weights[0] - w8).max())}))
""")


@pytest.mark.slow
def test_one_seed_reproduces_with_deterministic_ops(synth_records, tmp_path):
    result = run_script(DETERMINISTIC_SCRIPT, synth_records, str(tmp_path))
    assert result["same_seed"] == 0.0  # bit-identical weights
    assert result["other_seed"] > 1e-4  # and the seed matters


@pytest.mark.slow
@pytest.mark.parametrize("flags,motion,gate", [(["--no-centre-motion", "--gate-input", "crop", "--fusion-loss", "l2"],
                                               False, "crop"),
                                              (["--centre-motion", "--gate-input", "predictions", "--fusion-loss",
                                                "joint_distance"], True, "predictions")],
                         ids=["paper", "ours"])
def test_cli_trains_the_network_options_it_is_given(synth_records, tmp_path, flags, motion, gate):
    """`cadstn train` with the temporal network's input and the gate's input chosen by flag: the
    saved stages read what they were asked to (and the evaluation feeds them)."""
    import shutil

    from keras_cadstn import cli
    from keras_cadstn.models import get_submodel, uses_centre_motion
    from keras_cadstn.models.fusion import reads_predictions
    from keras_cadstn.training.evaluate import evaluate_stages
    from keras_cadstn.training.stages import load_stage
    records, run = tmp_path / "records", tmp_path / "run"
    for split, source in (("train", "train"), ("test", "test"), ("val", "test")):  # a stand-in validation split
        shutil.copytree(os.path.join(synth_records, source), records / split)
    assert cli.main(["train", "--records", str(records), "--run-dir", str(run), "--steps", "2", "--batch-size", "8",
                     "--seq-len", "4", "--checkpoint-every", "2"] + flags) == 0
    trained = {stage: load_stage(str(run), stage) for stage in STAGES}
    assert uses_centre_motion(trained["temporal"]) == motion == uses_centre_motion(trained["fusion"])
    assert reads_predictions(get_submodel(trained["fusion"], "gate_network")) == (gate == "predictions")
    result = evaluate_stages(trained, str(records), 4)["test"]
    assert set(result["errors"]) >= {"Temporal", "CADSTN"} and np.isfinite(list(result["errors"].values())).all()
    assert result["gate_w1"].shape == (len(result["gt"]),)


def test_a_second_training_into_a_busy_run_folder_is_refused_before_it_starts(tmp_path):
    from keras_cadstn import fileio
    from keras_cadstn.config import TrainConfig
    from keras_cadstn.errors import ConfigError
    from keras_cadstn.training.stages import TRAIN_LOCK, train_cadstn
    with fileio.folder_lock(str(tmp_path), TRAIN_LOCK, RuntimeError("the test's own lock")):
        with pytest.raises(ConfigError, match="another `cadstn train` is writing to this run folder"):
            train_cadstn("no/records/*.tfrecord", str(tmp_path), cfg=TrainConfig(steps={"baseline": 1}),
                         stages=("baseline",))
    assert not (tmp_path / "baseline").exists() and not (tmp_path / "history.csv").exists()
