"""Hostile and careless input: every case fails loudly (one-line CLI errors, exit 2) instead of
giving a silently wrong result."""
import ast
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import SMALL

from keras_cadstn import cli, fileio
from keras_cadstn.camera import Camera
from keras_cadstn.config import CADSTNConfig, TrainConfig
from keras_cadstn.data.nyu import load_nyu
from keras_cadstn.data.tfrecord import LOCK, conversion_lock, convert_split, read_manifest
from keras_cadstn.errors import CadstnError, ConfigError, DataError, TrainingError
from keras_cadstn.fileio import file_sha256
from keras_cadstn.training.stages import train_cadstn

TINY = CADSTNConfig(image_size=SMALL, seq_len=4, fc_units=16, lstm_units=8, dropout=0.0, lstm_dropout=0.0)
PACKAGE = os.path.join(os.path.dirname(__file__), "..", "keras_cadstn")


def one_line_error(capsys, command):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"cadstn {command}: error: "), err[0]
    return err[0]


def copy_records(synth_records, tmp_path, split="train"):
    d = tmp_path / "records"
    shutil.copytree(os.path.join(synth_records, split), d / "train")
    return d


# ----------------------------------------------------------------------------- conversion

def test_unfinished_conversion_is_refused(synth_records, tmp_path):
    from keras_cadstn.data import make_dataset
    d = copy_records(synth_records, tmp_path)
    manifest = read_manifest(d / "train")
    manifest["complete"] = False  # as a conversion killed after its first shards leaves it
    fileio.write_json(str(d / "train" / "manifest.json"), manifest)
    with pytest.raises(DataError, match="the conversion did not finish"):
        make_dataset(str(d / "train" / "*.tfrecord"))
    with pytest.raises(DataError, match="the conversion did not finish"):
        train_cadstn(str(d / "train" / "*.tfrecord"), str(tmp_path / "run"), TINY,
                     TrainConfig(steps={"baseline": 2}, verbose=0), stages=("baseline",))


def test_second_conversion_into_the_same_folder_is_refused(synth_root, tmp_path):
    out = str(tmp_path / "rec")
    os.makedirs(out)
    with conversion_lock(out):  # another conversion holds the folder
        with pytest.raises(DataError, match="another `cadstn convert` is writing to this folder"):
            convert_split(load_nyu(synth_root, "test"), out, shards=2, image_size=SMALL, progress=False)
    assert os.listdir(out) == [LOCK]  # nothing written by the refused one


def test_resume_rewrites_a_shard_whose_checksum_fails(synth_root, tmp_path):
    split = load_nyu(synth_root, "test")
    out = str(tmp_path / "rec")
    convert_split(split, out, shards=2, image_size=SMALL, progress=False)
    shard = os.path.join(out, read_manifest(out)["shards"][0]["file"])
    good = file_sha256(shard)
    data = bytearray(open(shard, "rb").read())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    open(shard, "wb").write(bytes(data))
    convert_split(split, out, shards=2, image_size=SMALL, progress=False)
    assert file_sha256(shard) == good


def test_conversions_of_the_same_data_are_byte_identical(synth_root, tmp_path):
    split = load_nyu(synth_root, "test")
    a = convert_split(split, str(tmp_path / "a"), shards=2, image_size=SMALL, progress=False)
    b = convert_split(split, str(tmp_path / "b"), shards=2, image_size=SMALL, progress=False)
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]


@pytest.mark.parametrize("size", ["0", "-32", "30"])
def test_convert_refuses_impossible_crop_sizes(synth_root, tmp_path, capsys, size):
    out = tmp_path / "rec"
    code = cli.main(["convert", "--dataset", "nyu", "--root", synth_root, "--out", str(out), "--image-size", size])
    assert code == 2
    line = one_line_error(capsys, "convert")
    assert ("multiple of 16" in line) if size == "30" else ("positive integer" in line)
    assert not out.exists()


def test_conversion_with_no_hand_in_any_frame_fails(synth_root, tmp_path):
    import dataclasses
    split = load_nyu(synth_root, "test")
    far = [dataclasses.replace(f, joints_uvd=f.joints_uvd + [0, 0, 2000.0]) for f in split.frames[:3]]
    with pytest.raises(DataError, match="no frame could be converted"):
        convert_split(dataclasses.replace(split, frames=far), str(tmp_path / "rec"), shards=1, image_size=SMALL,
                      progress=False)
    assert not read_manifest(str(tmp_path / "rec"))["complete"]


# ----------------------------------------------------------------------------- training

@pytest.mark.slow
def test_a_stage_with_no_data_fails_instead_of_saving_an_untrained_model(synth_records, tmp_path):
    long_clips = CADSTNConfig(**{**TINY.to_dict(), "seq_len": 64})  # shards hold fewer frames than T
    with pytest.raises(TrainingError, match="the training data gives no batch"):
        train_cadstn(os.path.join(synth_records, "train", "*.tfrecord"), str(tmp_path / "run"), long_clips,
                     TrainConfig(steps={"temporal": 4}, batch_size=64, verbose=0, temporal_init="scratch"),
                     stages=("temporal",))
    assert not (tmp_path / "run" / "temporal" / "model.keras").exists()


@pytest.mark.slow
def test_resume_counts_optimizer_steps_whatever_the_checkpoint_period(synth_records, tmp_path):
    import keras
    pattern = os.path.join(synth_records, "train", "*.tfrecord")
    run = str(tmp_path / "run")
    cfg = TrainConfig(steps={"baseline": 6}, batch_size=8, checkpoint_every=2, verbose=0, augment=False)

    class Killed(Exception):
        pass

    class KillAfterFourSteps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 4:
                raise Killed()

    import keras_cadstn.training.stages as train
    original = train.fit_stage

    def fit_and_die(model, ds, stage_dir, steps, cfg_, val=None):
        model.fit(ds, epochs=2, steps_per_epoch=2, verbose=0, callbacks=[train.StepBackup(
            os.path.join(stage_dir, train.BACKUP)), KillAfterFourSteps()])

    os.makedirs(os.path.join(run, "baseline"))
    train.fit_stage = fit_and_die
    try:
        with pytest.raises(Killed):
            train_cadstn(pattern, run, TINY, cfg, stages=("baseline",))
    finally:
        train.fit_stage = original
    import dataclasses
    model = train_cadstn(pattern, run, TINY, dataclasses.replace(cfg, checkpoint_every=5),
                         stages=("baseline",))["baseline"]
    assert int(model.optimizer.iterations.numpy()) == 6  # 2 backed-up steps (epoch 1) + 4 more, not 5 or 10
    with pytest.raises(ConfigError, match="trained 6 steps, this run asks for 9"):
        train_cadstn(pattern, run, TINY, dataclasses.replace(cfg, steps={"baseline": 9}), stages=("baseline",))


def test_nan_in_a_record_stops_training_with_the_shard_named(synth_records, tmp_path):
    import tensorflow as tf

    from keras_cadstn.data.tfrecord import encode_example
    from keras_cadstn.fileio import file_sha256
    d = copy_records(synth_records, tmp_path)
    manifest = read_manifest(d / "train")
    entry = manifest["shards"][0]
    shard = str(d / "train" / entry["file"])
    records = [r.numpy() for r in tf.data.TFRecordDataset(shard)]
    ex = tf.train.Example.FromString(records[3])
    crop = np.frombuffer(ex.features.feature["crop"].bytes_list.value[0], np.float16).copy()
    crop[7] = np.nan
    values = {k: (np.array(v.float_list.value) if v.float_list.value else v.int64_list.value[0])
              for k, v in ex.features.feature.items() if k != "crop"}
    records[3] = encode_example(dict(values, crop=crop))
    with tf.io.TFRecordWriter(shard) as w:
        for r in records:
            w.write(r)
    entry.update(bytes=os.path.getsize(shard), sha256=file_sha256(shard))
    fileio.write_json(str(d / "train" / "manifest.json"), manifest)
    with pytest.raises(DataError, match=f"NaN/inf or out-of-range.*{entry['file']}"):
        train_cadstn(str(d / "train" / "*.tfrecord"), str(tmp_path / "run"), TINY,
                     TrainConfig(steps={"baseline": 20}, batch_size=8, shuffle=False, augment=False, verbose=0),
                     stages=("baseline",))


def test_train_cli_refuses_bad_flags_in_one_line(synth_records, tmp_path, capsys):
    base = ["train", "--records", synth_records, "--run-dir", str(tmp_path / "run")]
    for extra, says in ((["--steps", "0"], "positive integer"), (["--stages", "baselin"], "invalid choice"),
                        (["--batch-size", "0"], "positive integer"), (["--stages", "fusion"], "needs the trained")):
        assert cli.main(base + extra) == 2
        assert says in one_line_error(capsys, "train")
    assert not (tmp_path / "run" / "fusion").exists()


@pytest.mark.slow
def test_train_takes_crop_size_and_joints_from_the_manifest(synth_records, tmp_path):
    """The flags that could disagree with the records are gone: a 32x32 set trains a 32x32 model."""
    assert "--image-size" not in cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    code = cli.main(["train", "--records", synth_records, "--run-dir", str(tmp_path / "run"), "--stages",
                     "baseline", "--steps", "2", "--batch-size", "4", "--seq-len", "4"])
    assert code == 0
    import keras
    model = keras.models.load_model(tmp_path / "run" / "baseline" / "model.keras")
    assert tuple(model.input.shape) == (None, SMALL, SMALL, 1) and model.output.shape[-1] == 42


@pytest.mark.slow
def test_output_folder_that_is_a_file_is_a_one_line_error(synth_records, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = cli.main(["train", "--records", synth_records, "--run-dir", str(blocker / "run"), "--stages", "baseline",
                     "--steps", "2"])
    assert code == 2
    assert "Not a directory" in one_line_error(capsys, "train")


# ----------------------------------------------------------------------------- evaluation

def test_eval_matches_lines_by_image_name_and_keeps_files_of_the_same_name(tmp_path, capsys, rng):
    from keras_cadstn.data.results import save_results
    gt = rng.uniform(-100, 100, (30, 14, 3)) + [0, 0, 700]
    pred = gt + rng.normal(0, 3, gt.shape)
    save_results(str(tmp_path / "gt.txt"), gt)
    save_results(str(tmp_path / "p.txt"), pred)
    names = [f"depth_1_{i:07d}.png" for i in range(30)]

    def with_names(src, dst, order):
        lines = open(src).read().splitlines()
        with open(dst, "w") as f:
            f.writelines(f"{names[i]} {lines[i]}\n" for i in order)

    with_names(tmp_path / "gt.txt", tmp_path / "gt_named.txt", range(30))
    shuffled = rng.permutation(30)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with_names(tmp_path / "p.txt", tmp_path / "a" / "ours.txt", shuffled)
    with_names(tmp_path / "p.txt", tmp_path / "b" / "ours.txt", range(30))
    assert cli.main(["eval", "--gt", str(tmp_path / "gt_named.txt"), "--pred", str(tmp_path / "a" / "ours.txt"),
                     "--pred", str(tmp_path / "b" / "ours.txt"), "--out", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    from keras_cadstn.data.metrics import mean_error
    expected = mean_error(gt, pred)
    rows = [line for line in out.splitlines() if "ours.txt" in line]
    assert len(rows) == 2  # both files, told apart by path
    assert all(f"| {expected:.2f} |" in r for r in rows)  # shuffled lines scored by name, not line order

    (tmp_path / "bin.txt").write_bytes(bytes(range(256)) * 4)
    assert cli.main(["eval", "--gt", str(tmp_path / "gt.txt"), "--pred", str(tmp_path / "bin.txt")]) == 2
    assert "binary content" in one_line_error(capsys, "eval")


# ----------------------------------------------------------------------------- cameras, bundles, models

def test_cameras_and_cubes_are_validated():
    with pytest.raises(ConfigError, match="fx, fy and depth_unit_mm must be > 0"):
        Camera(0.0, 500.0, 320, 240, 640, 480)
    with pytest.raises(ConfigError, match="finite"):
        Camera(float("nan"), 500.0, 320, 240, 640, 480)
    with pytest.raises(ConfigError, match="positive whole pixels"):
        Camera(500.0, 500.0, 320, 240, 0, 480)
    from keras_cadstn.data.preprocessing import check_cube
    with pytest.raises(ConfigError, match="cube must be 3 finite edge lengths"):
        check_cube((300, 0, 300))


def _tampered_bundle(tiny_bundle, tmp_path, change):
    path = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.path, path)
    meta = json.loads((path / "bundle.json").read_text())
    change(meta)
    (path / "bundle.json").write_text(json.dumps(meta))
    return str(path)


def test_tampered_bundles_fail_when_loaded(tiny_bundle, tmp_path):
    from keras_cadstn.models.bundle import load_bundle
    with pytest.raises(DataError, match=r"missing \['network'\]"):
        load_bundle(_tampered_bundle(tiny_bundle, tmp_path / "a", lambda m: m.pop("network")))
    with pytest.raises(DataError, match="the network predicts 14 joints, the dataset spec names 13"):
        load_bundle(_tampered_bundle(tiny_bundle, tmp_path / "b",
                                     lambda m: m["dataset"].update(joint_names=m["dataset"]["joint_names"][1:],
                                                                   reference_joint=12)))
    with pytest.raises(DataError, match=r"camera.*missing \['fx'\]"):
        load_bundle(_tampered_bundle(tiny_bundle, tmp_path / "c", lambda m: m["dataset"]["camera"].pop("fx")))
    with pytest.raises(DataError, match="fx, fy and depth_unit_mm must be > 0"):
        load_bundle(_tampered_bundle(tiny_bundle, tmp_path / "d", lambda m: m["dataset"]["camera"].update(fx=0)))
    # edits that every field check accepts: another cube (joints metres off), another joint order,
    # another LSTM width; the record of what the networks were trained with refuses them
    for name, edit in (("f", lambda m: m["dataset"].update(cube=[30.0, 30.0, 30.0])),
                       ("g", lambda m: m["dataset"].update(joint_names=m["dataset"]["joint_names"][::-1])),
                       ("h", lambda m: m["network"].update(lstm_units=m["network"]["lstm_units"] * 2)),
                       ("k", lambda m: m["dataset"].update(centre_scale=0.5))):
        with pytest.raises(DataError, match="differ from what the networks were trained with"):
            load_bundle(_tampered_bundle(tiny_bundle, tmp_path / name, edit))
    # without the record (a bundle written before it), the model itself still refuses another LSTM width
    with pytest.raises(DataError, match=r"LSTM has \[16\] units, the bundle's JSON says lstm_units=32"):
        load_bundle(_tampered_bundle(tiny_bundle, tmp_path / "i", lambda m: (
            m.pop("preprocessing_sha256"), m["network"].update(lstm_units=32))))
    swapped = tmp_path / "j"  # another valid refiner in place of the bundle's
    shutil.copytree(tiny_bundle.path, swapped)
    from keras_cadstn.models import build_centre_refiner
    build_centre_refiner(tiny_bundle.refiner_config).save(swapped / "refiner.keras")
    with pytest.raises(DataError, match="refiner.keras: damaged or replaced since the bundle was written"):
        load_bundle(str(swapped))
    corrupt = tmp_path / "e"
    shutil.copytree(tiny_bundle.path, corrupt)
    with open(corrupt / "cadstn.keras", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(DataError, match="cadstn.keras: damaged or replaced since the bundle was written"):
        load_bundle(str(corrupt))


@pytest.mark.slow
def test_tracker_needs_no_exporter_and_never_writes_into_the_bundle(tiny_bundle, tmp_path, monkeypatch):
    imported = set()
    for name in os.listdir(os.path.join(PACKAGE, "tracking")):
        if name.endswith(".py"):
            tree = ast.parse(open(os.path.join(PACKAGE, "tracking", name)).read())
            imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
            imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any("export" in m for m in imported), imported
    out = subprocess.run([sys.executable, "-c", "import sys, keras_cadstn.tracking.tracker; "
                          "print('keras_cadstn.export' in sys.modules)"], capture_output=True, text=True)
    assert out.stdout.strip() == "False"

    from keras_cadstn.tracking.tracker import HandTracker
    monkeypatch.setenv("KERAS_CADSTN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="no tflite float32 step model.*export_for_tracker"):
        HandTracker(tiny_bundle, backend="tflite")
    before = sorted(os.listdir(tiny_bundle.path))
    from keras_cadstn.export.tracker import export_for_tracker
    paths = export_for_tracker(tiny_bundle, "tflite", "float32")
    assert all(p.startswith(str(tmp_path / "cache")) and os.path.isfile(p) for p in paths.values())
    assert HandTracker(tiny_bundle, backend="tflite").update(np.zeros((480, 640), np.uint16)).found is False
    assert sorted(os.listdir(tiny_bundle.path)) == before


# ----------------------------------------------------------------------------- structure

def test_one_error_hierarchy():
    from keras_cadstn.errors import CorruptShardError, NoHandError, ParityError
    from keras_cadstn.export.artifacts import ParityError as exported
    assert exported is ParityError
    for cls in (DataError, ConfigError, NoHandError, CorruptShardError, ParityError, TrainingError):
        assert issubclass(cls, CadstnError)
    assert issubclass(DataError, ValueError) and issubclass(ParityError, RuntimeError)


def test_library_code_does_not_print_warnings():
    """Warnings go through ``warnings``/``logging``; print is for the CLI, the demo and progress."""
    allowed = {"cli.py", "commands.py", "demo.py", "training/stages.py", "training/refiner.py",
               "training/detector.py", "export/tracker.py"}  # stage and export progress lines
    offenders = []
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            path = os.path.relpath(os.path.join(folder, name), PACKAGE)
            if name.endswith(".py") and path not in allowed:
                src = open(os.path.join(folder, name)).read()
                if "print(" in src:
                    offenders.append(path)
    assert offenders == []


def test_facts_live_in_the_repository():
    """No comment or docstring points at files outside the repository."""
    hits = []
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                src = open(os.path.join(folder, name)).read()
                hits += [name for word in ("ARCHITECTURE.md", "STACK.md", "the issue") if word in src]
    assert hits == []
    assert os.path.isfile(os.path.join(PACKAGE, "..", "docs", "architecture.md"))


def test_temporaries_of_killed_runs_are_removed_by_the_next_write(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid no longer runs
    stale = tmp_path / f".out.json.{dead.pid}.tmp"
    stale.mkdir()
    (stale / "half_written").write_bytes(b"x" * 1000)
    stale_file = tmp_path / f".out.json.{dead.pid}.tmp.keras"
    stale_file.write_bytes(b"x")
    alive = tmp_path / f".out.json.{os.getppid()}.tmp"  # a writer that still runs keeps its temporary
    alive.write_bytes(b"x")
    other = tmp_path / f".other.json.{dead.pid}.tmp"  # another target's: not this write's business
    other.write_bytes(b"x")
    fileio.write_json(str(tmp_path / "out.json"), {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.json", alive.name, other.name])
