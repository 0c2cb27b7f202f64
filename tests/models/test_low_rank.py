"""Low-rank fc layers (models.low_rank): the factorisation, the model rewrite, save/load, and the
tracker's artifacts with them."""
import os

import keras
import numpy as np
import pytest

from keras_cadstn.errors import ConfigError
from keras_cadstn.models.low_rank import LowRankDense, factorise_dense, low_rank_model, weight_count, worth_factorising


@pytest.fixture(scope="module")
def samples(tiny_bundle):
    from keras_cadstn.tracking.runtime import sample_clips
    return sample_clips(tiny_bundle, num_clips=2)


def _dense(kernel, bias, activation=None):
    kernel = np.asarray(kernel, np.float32)
    layer = keras.layers.Dense(kernel.shape[1], activation=activation)
    layer.build((None, kernel.shape[0]))
    layer.set_weights([np.asarray(kernel, np.float32), np.asarray(bias, np.float32)])
    return layer


def test_factorised_kernel_is_the_truncated_svd_hand_computed():
    # singular values 3 and 1 along the axes: rank 1 keeps the 3 and drops the 1
    layer = _dense([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]], [0.5, -0.5])
    low = factorise_dense(layer, 1)
    first, second, _ = low.get_weights()
    assert first.shape == (3, 1) and second.shape == (1, 2)
    np.testing.assert_allclose(first @ second, [[3, 0], [0, 0], [0, 0]], atol=1e-6)
    # both factors carry sqrt(3): the same scale, for int8 weights
    np.testing.assert_allclose(np.abs(first).max(), np.sqrt(3), rtol=1e-6)
    np.testing.assert_allclose(np.abs(second).max(), np.sqrt(3), rtol=1e-6)
    np.testing.assert_allclose(low(np.array([[1.0, 1.0, 1.0]], np.float32)), [[3.5, -0.5]], atol=1e-6)


def test_factors_fitted_to_the_inputs_hand_computed():
    # the layer reads only the first input: its output there, 1 * x1, is all a rank-1 fit must keep,
    # while the kernel's own largest singular value (3) lies on an input never seen
    layer = _dense([[1.0, 0.0], [0.0, 3.0], [0.0, 0.0]], [0.0, 0.0])
    inputs = np.array([[t, 0.0, 0.0] for t in (-2.0, 0.5, 1.0, 4.0)], np.float32)
    fitted, plain = factorise_dense(layer, 1, inputs), factorise_dense(layer, 1)
    np.testing.assert_allclose(np.matmul(*fitted.get_weights()[:2]), [[1, 0], [0, 0], [0, 0]], atol=1e-6)
    np.testing.assert_allclose(fitted(inputs), layer(inputs), atol=1e-6)
    np.testing.assert_allclose(plain(inputs), np.zeros((4, 2)), atol=1e-6)  # the plain SVD keeps the 3
    with pytest.raises(ValueError, match="at least 2 input rows, got 1"):
        factorise_dense(layer, 2, inputs[:1])


def test_full_rank_factorisation_reproduces_the_layer(rng):
    layer = _dense(rng.normal(size=(20, 6)), rng.normal(size=6), activation="relu")
    x = rng.normal(size=(5, 20)).astype(np.float32)
    np.testing.assert_allclose(factorise_dense(layer, 6)(x), layer(x), atol=1e-5)


def test_only_dense_layers_halved_by_the_rank_are_factorised():
    assert worth_factorising(_dense(np.zeros((512, 32)), np.zeros(32)), 15)  # 2*15*544 = 16320 <= 16384
    assert not worth_factorising(_dense(np.zeros((512, 32)), np.zeros(32)), 16)  # 17408 > 16384
    assert not worth_factorising(keras.layers.Conv2D(4, 3), 1)


@pytest.mark.slow
def test_low_rank_step_model(tiny_bundle, rng, tmp_path):
    step = tiny_bundle.frame_model()
    low = low_rank_model(step, 15)
    # at rank 15 the tiny network's 512 -> 32 fc layers (the two H1 and the encoder's fc1) and the
    # gate's 126 -> 64 hidden layer lose at least half their weights; the 32 -> 32 H2 pair, the
    # 42-wide output layers and the LSTM do not, and stay as trained
    names = sorted(layer.name for model in low.layers if isinstance(model, keras.Model) for layer in model.layers
                   if isinstance(layer, LowRankDense))
    assert names == ["gate_hidden_rank15", "h1_3d_rank15", "h1_depth_rank15"]
    encoder = low.get_layer("temporal_stream").get_layer("frame_encoder")
    assert isinstance(encoder.get_layer("fc1_rank15"), LowRankDense)
    saved = 3 * (512 * 32 - 15 * (512 + 32)) + (126 * 64 - 15 * (126 + 64))
    assert weight_count(step) - weight_count(low) == saved
    # each factorised kernel is its layer's truncated SVD
    original = step.get_layer("spatial_inference").get_layer("h1_depth").kernel.numpy().astype(np.float64)
    u, s, vt = np.linalg.svd(original, full_matrices=False)
    first, second, _ = low.get_layer("spatial_inference").get_layer("h1_depth_rank15").get_weights()
    np.testing.assert_allclose(first @ second, (u[:, :15] * s[:15]) @ vt[:15], atol=1e-5)
    # the rewrite shares every other layer and leaves the original model as it was
    assert low.get_layer("temporal_stream").get_layer("lstm_cell") is step.get_layer("temporal_stream").get_layer(
        "lstm_cell")
    inputs = [rng.normal(size=(2,) + tuple(t.shape[1:])).astype(np.float32) for t in step.inputs]
    before = [np.asarray(o) for o in step(inputs)]
    low(inputs)
    np.testing.assert_array_equal(before[0], np.asarray(step(inputs)[0]))
    # save / load without custom objects
    path = str(tmp_path / "low.keras")
    low.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(low(inputs), loaded(inputs)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_bad_rank_is_refused(tiny_bundle):
    from keras_cadstn.tracking.runtime import check_fc_rank
    for bad in (0, -3, 2.5, "8", True):
        with pytest.raises(ConfigError, match="fc_rank must be None"):
            check_fc_rank(bad)
    with pytest.raises(ValueError, match="rank must be >= 1"):
        low_rank_model(tiny_bundle.frame_model(), 0)
    with pytest.raises(ValueError, match="no fc layer of cadstn_step keeps less than half.*rank 24"):
        low_rank_model(tiny_bundle.frame_model(), 24)  # the largest, 512 x 32, needs rank <= 15


@pytest.fixture(scope="module")
def low_rank_bundle(tmp_path_factory, synth_records):
    """A tiny bundle holding its step at fc rank 4, fitted on the synthetic training records."""
    from conftest import make_tiny_bundle

    from keras_cadstn.models.bundle import add_low_rank_step
    from keras_cadstn.tracking.runtime import sample_clips
    bundle = make_tiny_bundle(tmp_path_factory.mktemp("low_rank"))
    train = os.path.join(synth_records, "train", "*.tfrecord")
    add_low_rank_step(bundle, 4, sample_clips(bundle, 8, records=train).crops, train)
    return bundle


@pytest.mark.slow
def test_bundle_stores_the_fitted_low_rank_step(low_rank_bundle, synth_records, rng, tmp_path):
    import json
    import shutil

    from keras_cadstn.errors import DataError
    from keras_cadstn.models.bundle import SPEC_FILE, add_low_rank_step, load_bundle
    from keras_cadstn.tracking.runtime import sample_clips
    bundle = low_rank_bundle
    train = os.path.join(synth_records, "train", "*.tfrecord")
    entry = json.load(open(os.path.join(bundle.path, SPEC_FILE)))["low_rank_steps"]["4"]
    assert entry["model"] == "step_rank4.keras" and entry["calibration"] == train and entry["crops"] == 32
    crops = sample_clips(bundle, 8, records=train).crops
    stored, fitted = bundle.low_rank_step(4), low_rank_model(bundle.frame_model(), 4, crops)
    inputs = [rng.normal(size=(2,) + tuple(t.shape[1:])).astype(np.float32) for t in stored.inputs]
    for a, b in zip(stored(inputs), fitted(inputs)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    # fitted to the crops, not the plain SVD: closer to the full step on them
    full, plain = bundle.frame_model(), low_rank_model(bundle.frame_model(), 4)
    states = [np.zeros((len(crops), t.shape[1]), np.float32) for t in full.inputs[1:]]
    target = np.asarray(full([crops] + states)[0])
    assert (np.abs(np.asarray(stored([crops] + states)[0]) - target).mean()
            < np.abs(np.asarray(plain([crops] + states)[0]) - target).mean())
    with pytest.raises(ConfigError, match="no step of fc rank 8.*cadstn compress"):
        bundle.low_rank_step(8)
    with pytest.raises(ConfigError, match="needs at least 4 input rows"):
        add_low_rank_step(bundle, 4, crops[:2], "two crops")
    with pytest.raises(DataError, match=r"crops of shape \(2, 16, 16, 1\)"):
        add_low_rank_step(bundle, 4, crops[:2, :16, :16], "small crops")
    # a bundle whose model was replaced refuses the step made from the old one
    copy = str(tmp_path / "copy")
    shutil.copytree(bundle.path, copy)
    other = make_other_model_file(copy)
    with pytest.raises(DataError, match="made from another cadstn.keras"):
        load_bundle(copy).low_rank_step(4)
    assert os.path.isfile(other)


@pytest.mark.slow
def test_low_rank_step_loads_in_a_fresh_process(low_rank_bundle):
    """What `cadstn track --fc-rank` and `cadstn export` do in a new process: nothing but
    load_bundle imported before the step (whose LowRankDense must be registered by then)."""
    import subprocess
    import sys
    code = ("import sys; from keras_cadstn.models.bundle import load_bundle; "
            "m = load_bundle(sys.argv[1]).low_rank_step(4); "
            "print(sorted({type(l).__name__ for l in m._flatten_layers()} & {'LowRankDense'}))")
    out = subprocess.run([sys.executable, "-c", code, low_rank_bundle.path], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "['LowRankDense']"


def make_other_model_file(folder):
    """Overwrite a bundle's cadstn.keras with the same network, other weights, and record the new
    file's hash (a bundle written again with another model, its old low-rank step left in place)."""
    from keras_cadstn.fileio import read_json
    from keras_cadstn.models.bundle import FILES_KEY, MODEL_FILE, SPEC_FILE, load_keras_model, write_bundle_json
    path = os.path.join(folder, MODEL_FILE)
    model = load_keras_model(path, compile=False)
    model.set_weights([w * 1.01 for w in model.get_weights()])
    model.save(path)
    meta = read_json(os.path.join(folder, SPEC_FILE))
    meta.pop(FILES_KEY)
    write_bundle_json(folder, meta)
    return path


@pytest.mark.slow
def test_tracker_with_low_rank_tflite_step_matches_keras(low_rank_bundle, samples, tmp_path):
    from keras_cadstn.config import SynthConfig
    from keras_cadstn.data.synthetic import SequenceRenderer
    from keras_cadstn.export.tflite import export_tflite
    from keras_cadstn.export.tracker import export_for_tracker
    from keras_cadstn.tracking.tracker import HandTracker
    bundle = low_rank_bundle
    paths = export_for_tracker(bundle, "tflite", "float32", str(tmp_path), samples, fc_rank=4)
    assert os.path.basename(paths["model_path"]) == "step_float32_rank4.tflite"
    assert os.path.basename(paths["refiner_path"]) == "refine_float32.tflite"  # the refiner stays full rank
    report = export_tflite(bundle, str(tmp_path / "again.tflite"), "step", "float32", samples, fc_rank=4)
    assert report.fc_rank == 4 and report.max_abs_mm <= 0.01 and report.rank_mean_mm > 0.01
    assert "fc rank 4" in report.line()
    renderer = SequenceRenderer(11, SynthConfig(camera=bundle.camera))
    frames = [renderer.render(t)[0].astype(np.uint16) for t in range(6)]
    trackers = {name: HandTracker(bundle, backend=name, fc_rank=4, **(paths if name == "tflite" else {}))
                for name in ("keras", "tflite")}
    full = HandTracker(bundle, backend="keras")
    for depth in frames:
        results = {name: t.update(depth) for name, t in trackers.items()}
        reference = full.update(depth)
        assert all(r.found for r in results.values())
        np.testing.assert_allclose(results["tflite"].joints_mm, results["keras"].joints_mm, atol=0.01)
        assert np.abs(results["keras"].joints_mm - reference.joints_mm).max() > 0.01  # a different model
    with pytest.raises(ConfigError, match="no step of fc rank 8"):
        HandTracker(bundle, backend="keras", fc_rank=8)


@pytest.mark.slow
def test_cli_compresses_exports_and_refuses_ranks(tmp_path, synth_records, capsys):
    from conftest import make_tiny_bundle

    from keras_cadstn import cli
    bundle = make_tiny_bundle(tmp_path)
    train = os.path.join(synth_records, "train", "*.tfrecord")
    args = ["export", "--bundle", bundle.path, "--precisions", "float32", "--no-onnx", "--no-saved-model",
            "--clips", "2", "--out", str(tmp_path / "out"), "--fc-rank", "4"]
    assert cli.main(args) == 2  # no step of that rank yet: one line, nothing written
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cadstn export: error:") and "cadstn compress" in err[0]
    assert not os.path.exists(tmp_path / "out") or os.listdir(tmp_path / "out") == []
    assert cli.main(["compress", "--bundle", bundle.path, "--fc-rank", "4", "--records", train, "--clips", "4"]) == 0
    assert "step_rank4.keras: the streaming step with fc layers of rank 4, fitted on 16 crops" in capsys.readouterr().out
    assert cli.main(args) == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["refine_float32.tflite", "spatial_float32_rank4.tflite",
                                                    "step_float32_rank4.tflite"]
    out = capsys.readouterr().out
    assert out.count("fc rank 4: mean") == 2 and "refine   float32  max" in out
    for bad in ("0", "-2", "x"):
        assert cli.main(["track", "--bundle", bundle.path, "--source", f"pngs:{tmp_path}", "--jsonl",
                         str(tmp_path / "j.jsonl"), "--fc-rank", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("cadstn track: error:") and "--fc-rank" in err[0]
    assert not os.path.exists(tmp_path / "j.jsonl")


@pytest.mark.slow
def test_paper_size_step_at_rank_16_hand_counted():
    """128x128, T=16, our options: at rank 16 the three 8192 -> 1024 fc layers, the two 1024 -> 1024
    ones, the spatial and temporal output layers (1024 and 2051 -> 42) and the gate's hidden layer
    (129 -> 64) lose at least half their weights and are factorised; the gate's output layer (64 -> 42)
    and the LSTM (8.4 M) are not."""
    from test_models import OURS, PREDICTION_GATE, SPATIAL_INFERENCE, TEMPORAL_MOTION

    from keras_cadstn.data.frames import NYU
    from keras_cadstn.models import build_cadstn
    from keras_cadstn.models.bundle import Bundle
    step = Bundle("unsaved", build_cadstn(config=OURS), NYU, OURS).frame_model()
    full = weight_count(step)
    assert full == SPATIAL_INFERENCE + TEMPORAL_MOTION + PREDICTION_GATE == 36_115_132  # counted by hand there
    low = low_rank_model(step, 16)
    def saving(n_in, n_out):
        return n_in * n_out - 16 * (n_in + n_out)
    saved = 3 * saving(8192, 1024) + 2 * saving(1024, 1024) + saving(1024, 42) + saving(2051, 42) + saving(129, 64)
    assert full - weight_count(low) == saved == 26_838_846
    x = [np.zeros((1,) + tuple(t.shape[1:]), np.float32) for t in low.inputs]
    joints, h, c = low(x)
    assert joints.shape == (1, 42) and h.shape == c.shape == (1, 1024)


@pytest.mark.slow
def test_low_rank_step_of_the_papers_network_exports(tmp_path, synth_records):
    """The paper's options (no centre motion, a gate on the crop, named ``gate_network``): the stored
    step converts with its sliced convolutions folded and matches its Keras model."""
    from conftest import NETWORK_OPTIONS, make_tiny_bundle

    from keras_cadstn.export.tflite import export_tflite
    from keras_cadstn.models.bundle import add_low_rank_step
    from keras_cadstn.tracking.runtime import sample_clips
    bundle = make_tiny_bundle(tmp_path, **NETWORK_OPTIONS["paper"])
    train = os.path.join(synth_records, "train", "*.tfrecord")
    add_low_rank_step(bundle, 4, sample_clips(bundle, 8, records=train).crops, train)
    assert isinstance(bundle.low_rank_step(4).get_layer("gate_network").get_layer("fc1_rank4"), LowRankDense)
    report = export_tflite(bundle, str(tmp_path / "step.tflite"), "step", "float32", sample_clips(bundle, 2),
                           fc_rank=4)
    assert report.max_abs_mm <= 0.01 and report.rank_mean_mm > 0.01
