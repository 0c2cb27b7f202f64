import dataclasses
import os

import numpy as np
import pytest

from keras_cadstn import cli
from keras_cadstn.cli import example_main
from keras_cadstn.config import DemoConfig, RefinerConfig, TrainConfig, paper
from keras_cadstn.data.metrics import mean_error
from keras_cadstn.data.results import load_results, save_results
from keras_cadstn.data.tfrecord import read_manifest
from keras_cadstn.demo import run_demo
from keras_cadstn.errors import DataError
from keras_cadstn.training.evaluate import clip_starts, predict_sequence, sequence_segments


def test_clip_windows_cover_every_frame():
    assert clip_starts(40, 16) == [0, 16, 24]  # last window aligned to the end
    assert clip_starts(32, 16) == [0, 16]
    assert clip_starts(10, 16) == [0]
    assert sequence_segments([0, 0, 0, 1, 1, 1], [0, 1, 2, 3, 4, 6]) == [(0, 3), (3, 5), (5, 6)]


class WindowIndex:
    """A fake clip model: every frame's output is the index of its window's first crop value."""

    def predict_on_batch(self, clips):
        return np.repeat(clips[:, :1, 0, 0, :1], clips.shape[1], axis=1)


def test_predict_sequence_keeps_the_earlier_window_where_windows_overlap():
    crops = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)  # crop i holds the value i
    pred = predict_sequence(WindowIndex(), crops, seq_len=4, batch_size=2)
    # windows start at 0, 4 and 6 (end-aligned); frames 6, 7 keep window 4's output
    np.testing.assert_array_equal(pred[:, 0], [0, 0, 0, 0, 4, 4, 4, 4, 6, 6])
    short = predict_sequence(WindowIndex(), crops[:3], seq_len=4)  # padded by repeating the last frame
    np.testing.assert_array_equal(short[:, 0], [0, 0, 0])


class WindowMotion:
    """A fake clip model over [clips, motion]: every frame's output is its motion's x."""

    def predict_on_batch(self, inputs):
        clips, motion = inputs
        assert clips.shape[:2] == motion.shape[:2]
        return motion[..., :1]


def test_predict_sequence_feeds_each_window_the_motion_from_its_first_frame():
    crops = np.zeros((10, 1, 1, 1), np.float32)
    motion = np.stack([np.arange(10) + 1.0] * 3, axis=1).astype(np.float32)  # frame i moved by i + 1
    pred = predict_sequence(WindowMotion(), crops, seq_len=4, batch_size=2, motion=motion)
    # windows start at 0, 4 and 6; each window's first frame has no past (motion 0); frames 6, 7
    # keep window 4's output
    np.testing.assert_array_equal(pred[:, 0], [0, 2, 3, 4, 0, 6, 7, 8, 9, 10])
    short = predict_sequence(WindowMotion(), crops[:3], seq_len=4, motion=motion[:3])
    np.testing.assert_array_equal(short[:, 0], [0, 2, 3])


def test_demo_config_data_sources(tmp_path):
    assert DemoConfig().dataset() == ("synthetic", None)
    with pytest.raises(ValueError, match="'synthetic', 'nyu:/path' or 'icvl:/path'"):
        DemoConfig(data="kinect:/x").dataset()
    with pytest.raises(DataError, match="does not exist"):
        DemoConfig(data=f"nyu:{tmp_path}/missing").dataset()
    recipe = paper(f"icvl:{tmp_path}")
    assert recipe.dataset() == ("icvl", str(tmp_path))
    assert recipe.train == TrainConfig() and recipe.image_size == 128 and recipe.train.batch_size == 128
    assert DemoConfig().scaled(0.01).train.steps["fusion"] == 2


def test_example_restricts_the_dataset(capsys):
    with pytest.raises(SystemExit):
        example_main("nyu", "train on NYU", ["--data", "icvl:/somewhere"])
    assert "--data must be 'synthetic' or 'nyu:/path'" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_end_to_end_in_a_tiny_configuration(tmp_path):
    train = TrainConfig(steps=dict.fromkeys(("baseline", "sliced3d", "spatial", "temporal", "fusion", "refine"), 2),
                        batch_size=16, checkpoint_every=2, verbose=0)
    cfg = DemoConfig(workdir=str(tmp_path), frames_per_sequence=24, train_sequences=2, val_sequences=1,
                     test_sequences=1, image_size=32, seq_len=4, network=(("fc_units", 32), ("lstm_units", 16)),
                     seeds=2, train=train, refiner=RefinerConfig(image_size=16, filters=(4, 8), fc_units=16),
                     refiner_person_sequences=1, refiner_person_frames=3, fc_rank=4)
    res = run_demo(cfg)
    # the tracker's rows: labelled centre, the localiser's, the localiser's moved by the refiner, and
    # that with the bundle's step of fc rank 4 (fitted to the 48 training crops)
    assert list(res["tracker"]) == ["labelled", "localiser", "localiser + refiner", "localiser + refiner, fc rank 4"]
    assert all(v["frames"] == 24 for v in res["tracker"].values())
    assert os.path.isfile(tmp_path / "run" / "refine" / "model.keras")
    with np.load(tmp_path / "run" / "refine" / "examples.npz") as examples:  # 8 crops a frame: training + person
        assert len(examples["crops"]) == 8 * (48 + 3)
    assert res["frames_evaluated"] == 24 and res["centre"] == "labelled"  # every test frame, in order
    assert list(res["ablation"]) == ["Baseline", "Sliced 3D", "Spatial", "Temporal", "CADSTN", "Fixed w (val)"]
    assert res["seeds"] == 2 and all(v["n"] == 2 and v["sd"] >= 0 for v in res["ablation_spread"].values())
    assert all(w in [round(0.1 * i, 1) for i in range(11)] for w in res["w_from_validation"])
    assert read_manifest(str(tmp_path / "records_32" / "val"))["num_records"] == 24  # the held-out sequence
    assert read_manifest(str(tmp_path / "records_32" / "train"))["num_records"] == 48
    gt = load_results(str(tmp_path / "results" / "ground_truth.txt"), "nyu", "uvd")
    cadstn = load_results(str(tmp_path / "results" / "cadstn.txt"), "nyu", "uvd")
    assert gt.shape == cadstn.shape == (24, 14, 3)
    assert mean_error(gt, cadstn) == pytest.approx(res["per_seed"][0]["CADSTN"], abs=1e-3)  # 4-decimal files
    assert res["ablation"]["CADSTN"] == pytest.approx(np.mean([r["CADSTN"] for r in res["per_seed"]]))
    for name in ("success_rate.png", "per_joint_error.png"):
        assert os.path.getsize(tmp_path / "plots" / name) > 1000
    assert os.path.isfile(os.path.join(res["saved_model"], "saved_model.pb"))
    from keras_cadstn import load_bundle
    bundle = load_bundle(res["bundle"])
    assert bundle.image_size == 32 and bundle.refiner_config.image_size == 16 and bundle.refiner is not None
    assert bundle.low_rank_step(4).get_layer("spatial_inference").get_layer("h1_depth_rank4").rank == 4


@pytest.mark.slow
def test_the_refiners_person_scenes(tmp_path):
    """Synthetic data only: scenes with a person behind the palm, made once; other counts in the
    same folder are refused."""
    from keras_cadstn.demo import person_scenes
    from keras_cadstn.errors import ConfigError
    cfg = DemoConfig(workdir=str(tmp_path), refiner_person_sequences=2, refiner_person_frames=2)
    split = person_scenes(cfg)
    assert len(split) == 4 and split.num_sequences == 2
    cam = split.spec.camera
    for frame in split.frames:
        depth = cam.to_mm(split.read_depth(frame.path))
        palm_depth = frame.joints_xyz[split.spec.reference_joint][2]
        body = (depth > palm_depth + 140.0) & (depth < palm_depth + 520.0)
        assert body.sum() > 20000, frame.path  # torso, head and arms fill a good part of the image
    assert person_scenes(cfg).frames[0].path == split.frames[0].path  # made once, then imported
    with pytest.raises(ConfigError, match="makes 3 of 2 frames"):
        person_scenes(dataclasses.replace(cfg, refiner_person_sequences=3))
    assert person_scenes(dataclasses.replace(cfg, refiner_person_sequences=0)) is None
    assert person_scenes(dataclasses.replace(cfg, data=f"nyu:{tmp_path}")) is None  # real frames show the body


@pytest.mark.slow
def test_demo_data_made_with_other_counts_is_refused_not_reused(tmp_path):
    from keras_cadstn.demo import prepare_records
    from keras_cadstn.errors import ConfigError
    cfg = DemoConfig(workdir=str(tmp_path), frames_per_sequence=8, train_sequences=2, val_sequences=1,
                     test_sequences=1, image_size=32)
    prepare_records(cfg)
    assert prepare_records(cfg)[0] == str(tmp_path / "records_32")  # the same configuration: reused
    with pytest.raises(ConfigError, match="makes 2 of 8 frames"):
        prepare_records(dataclasses.replace(cfg, test_sequences=2))  # the PNGs on disk are other sequences
    with pytest.raises(ConfigError, match="records of 16 frames.*train split has 8"):
        prepare_records(dataclasses.replace(cfg, train_sequences=1, val_sequences=2))  # same sequences, other split
    with pytest.raises(ConfigError, match="records of another pre-processing.*'centre_scale': 0.5"):
        prepare_records(dataclasses.replace(cfg, centre_scale=0.5))  # crops centred otherwise
    half = dataclasses.replace(cfg, centre_scale=0.5, workdir=str(tmp_path / "half"))
    records = prepare_records(half)[0]
    for split in ("train", "val", "test"):
        assert read_manifest(os.path.join(records, split))["dataset"]["centre_scale"] == 0.5


def test_centre_scale_out_of_range_is_refused_before_any_work(tmp_path, capsys):
    for argv in (["demo", "--workdir", str(tmp_path / "demo"), "--centre-scale", "0"],
                 ["convert", "--dataset", "nyu", "--root", str(tmp_path), "--out", str(tmp_path / "rec"),
                  "--centre-scale", "1.5"], ["demo", "--rotation", "181"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"cadstn {argv[0]}: error: ") and "\n" not in err
        assert argv[-1] in err and ("expected" in err or "centre_scale must be in (0, 1]" in err)
    from keras_cadstn.demo import prepare_records
    from keras_cadstn.errors import ConfigError
    with pytest.raises(ConfigError, match=r"centre_scale must be in \(0, 1\], got 2"):
        prepare_records(DemoConfig(workdir=str(tmp_path / "api"), centre_scale=2))
    assert not os.listdir(tmp_path)  # nothing made


def test_eval_cli_prints_the_table_and_writes_plots(tmp_path, capsys, rng):
    gt = rng.uniform(-100, 100, (20, 14, 3)) + [0, 0, 700]
    a = gt + rng.normal(0, 5, gt.shape)
    b = gt + [10.0, 0.0, 0.0]  # every joint 10 mm off: mean error exactly 10
    for name, joints in (("gt", gt), ("a", a), ("b", b)):
        save_results(str(tmp_path / f"{name}.txt"), joints, "nyu", "uvd")
    code = cli.main(["eval", "--gt", str(tmp_path / "gt.txt"), "--pred", str(tmp_path / "a.txt"),
                     "--pred", str(tmp_path / "b.txt"), "--dataset", "nyu", "--out", str(tmp_path / "plots")])
    out = capsys.readouterr().out
    assert code == 0
    assert "| b.txt | 10.00 | 1.000 | 1.000 | 1.000 |" in out
    assert f"| a.txt | {mean_error(gt, a):.2f} |" in out
    assert (tmp_path / "plots" / "success_rate.png").is_file()
    np.savetxt(tmp_path / "short.txt", np.full((3, 42), 500.0))
    assert cli.main(["eval", "--gt", str(tmp_path / "gt.txt"), "--pred", str(tmp_path / "short.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cadstn eval: error: ") and "3 frames, ground truth" in err[0]


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["--help"], ["synth", "--help"], ["synth", "--frames", "2", "--sequences", "1",
                                                                     "--test-sequences", "1"]])
def test_the_cli_starts_without_tensorflows_start_up_lines(tmp_path, argv):
    import subprocess
    import sys
    if argv[0] == "synth" and "--help" not in argv:
        argv = argv + ["--out", str(tmp_path / "s")]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-m", "keras_cadstn.cli", *argv], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    for noise in ("oneDNN", "cuInit", "absl::InitializeLog", "cuda drivers", "cpu_feature_guard"):
        assert noise not in out.stderr, out.stderr[-2000:]


def test_ctrl_c_before_a_command_handles_it_is_one_line(monkeypatch, capsys):
    from keras_cadstn import commands

    def interrupted(args):
        raise KeyboardInterrupt  # e.g. while the bundle or TensorFlow loads
    monkeypatch.setattr(commands, "cmd_presets", interrupted)
    assert cli.main(["presets"]) == 130
    assert capsys.readouterr().err == "cadstn presets: interrupted\n"
