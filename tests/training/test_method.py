"""Does each part of the method do its job? Small, fast problems whose answers are known."""
import os

import keras
import numpy as np
import pytest
from conftest import SMALL

from keras_cadstn.config import CADSTNConfig
from keras_cadstn.models import build_baseline_network, build_fusion_network, build_temporal_network, gate_weights_model

TOY = CADSTNConfig(num_joints=2, image_size=SMALL, seq_len=4, fc_units=32, lstm_units=16, dropout=0.0,
                   lstm_dropout=0.0)


@pytest.mark.slow
def test_baseline_overfits_a_tiny_set(rng):
    keras.utils.set_random_seed(0)
    x = rng.uniform(-1, 1, (16, SMALL, SMALL, 1)).astype("float32")
    y = rng.normal(0, 0.3, (16, 6)).astype("float32")
    model = build_baseline_network(TOY)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=16, epochs=150, verbose=0)
    assert model.evaluate(x, y, verbose=0) < first / 10


@pytest.mark.slow
def test_temporal_network_uses_its_history(rng):
    """The answer is visible only in a clip's first frame; later frames are blank. A per-frame
    model cannot beat the mean there; the LSTM carries the value forward."""
    keras.utils.set_random_seed(0)

    def clips(n):
        value = rng.uniform(-1, 1, n).astype("float32")
        x = np.ones((n, 4, SMALL, SMALL, 1), np.float32)  # background
        x[:, 0] = value[:, None, None, None]
        y = np.repeat(value[:, None, None], 4, axis=1) * np.ones((1, 1, 6), np.float32)
        return x, y, value

    x, y, _ = clips(512)
    model = build_temporal_network(TOY)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="mse")
    model.fit(x, y, batch_size=32, epochs=12, verbose=0)
    xt, yt, value = clips(128)
    pred = model.predict(xt, verbose=0)
    later = np.abs(pred[:, 1:] - yt[:, 1:]).mean()
    blind = np.abs(value - value.mean()).mean()  # the best a model without history can do (about 0.5)
    assert later < 0.3 * blind, (later, blind)


@pytest.mark.slow
def test_temporal_network_follows_the_hand_through_the_centre_motion(rng):
    """The hand's place is visible only in a clip's first frame; then the crop centre moves while
    the hand stays, so its place in the crop is the first one minus the summed centre motion. With
    the motion as input the network tracks it; without, the same network cannot."""
    def clips(n):
        value = rng.uniform(-1, 1, n).astype("float32")
        x = np.ones((n, 4, SMALL, SMALL, 1), np.float32)
        x[:, 0] = value[:, None, None, None]
        motion = rng.uniform(-0.3, 0.3, (n, 4, 3)).astype("float32")
        motion[:, 0] = 0.0
        place = value[:, None] - np.cumsum(motion[..., 0], axis=1)
        return x, motion, np.repeat(place[..., None], 6, axis=-1)

    x, motion, y = clips(512)
    xt, motion_t, yt = clips(128)
    errors = {}
    for with_motion in (True, False):
        keras.utils.set_random_seed(0)
        model = build_temporal_network(TOY.replace(centre_motion=with_motion))
        model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="mse")
        model.fit([x, motion] if with_motion else x, y, batch_size=32, epochs=12, verbose=0)
        pred = model.predict([xt, motion_t] if with_motion else xt, verbose=0)
        errors[with_motion] = np.abs(pred[:, 1:] - yt[:, 1:]).mean()
    assert errors[True] < 0.5 * errors[False], errors


def _fixed_model(inputs, kernel_pixel, bias, name):
    """A fixed linear read-out: every output = kernel_pixel * crop[0, 0] + bias."""
    flat = keras.layers.Flatten()(inputs)
    dense = keras.layers.Dense(6, name=f"{name}_readout")
    out = dense(flat)
    model = keras.Model(inputs, out, name=name)
    w = np.zeros((SMALL * SMALL, 6), np.float32)
    w[0] = kernel_pixel
    dense.set_weights([w, np.full(6, bias, np.float32)])
    return model


@pytest.mark.slow
@pytest.mark.parametrize("gate_input", ["crop", "predictions"])
def test_gate_learns_a_weight_that_depends_on_its_input(rng, gate_input):
    """The spatial prediction is corrupted (off by 1) on inputs whose top-left block is bright and
    exact elsewhere; the temporal one is always off by 0.5. The right weight on the temporal
    prediction is 1 on corrupted inputs and 0 on clean ones: the gate must see the difference, in
    the crop or (the prediction gate) in how the two predictions disagree."""
    keras.utils.set_random_seed(0)
    crop = keras.Input(TOY.crop_shape)
    spatial = _fixed_model(crop, 0.5, 0.5, "spatial")  # flag +1 -> 1.0 (wrong), -1 -> 0.0 (right)
    clip = keras.Input((4,) + TOY.crop_shape)
    per_frame = _fixed_model(keras.Input(TOY.crop_shape), 0.0, 0.5, "temporal_frame")
    temporal = keras.Model(clip, keras.layers.TimeDistributed(per_frame)(clip), name="temporal")
    trainable = build_fusion_network(spatial, temporal, TOY.replace(gate_input=gate_input))

    def data(n):
        x = rng.uniform(-1, 1, (n, 4, SMALL, SMALL, 1)).astype("float32")
        flag = rng.choice([-1.0, 1.0], (n, 4)).astype("float32")
        x[:, :, :8, :8, 0] = flag[..., None, None]
        return x, np.zeros((n, 4, 6), np.float32), flag

    x, y, _ = data(256)
    # at 1e-3 the common-mode gradient drives the sigmoid into saturation before the gate has learnt
    # to tell the inputs apart (w1 ~ 1 everywhere: a constant gate); 3e-4 separates them
    trainable.compile(optimizer=keras.optimizers.Adam(3e-4), loss="mse")
    trainable.fit(x, y, batch_size=32, epochs=28, verbose=0)
    xt, _, flag = data(64)
    w1 = gate_weights_model(trainable).predict(xt, verbose=0).mean(axis=-1)
    assert w1[flag > 0].mean() > 0.8 and w1[flag < 0].mean() < 0.2, (w1[flag > 0].mean(), w1[flag < 0].mean())


@pytest.mark.slow
@pytest.mark.parametrize("gate_input", ["crop", "predictions"])
def test_gate_starts_at_the_best_constant_weight_of_its_data(rng, gate_input):
    """Targets are 0.3 J_temporal + 0.7 J_spatial: the gate starts from that constant weight (for
    every coordinate and input) before training; on noisy targets, from the weight of the lowest
    mean joint distance (or squared error, with the paper's L2 loss)."""
    import tensorflow as tf

    from keras_cadstn.training.stages import start_gate_at_best_constant
    crop = keras.Input(TOY.crop_shape)
    spatial = _fixed_model(crop, 0.5, 0.5, "spatial")
    clip = keras.Input((4,) + TOY.crop_shape)
    per_frame = _fixed_model(keras.Input(TOY.crop_shape), -1.0, 0.0, "temporal_frame")
    temporal = keras.Model(clip, keras.layers.TimeDistributed(per_frame)(clip), name="temporal")
    fusion = build_fusion_network(spatial, temporal, TOY.replace(gate_input=gate_input))
    x = rng.uniform(-1, 1, (24, 4, SMALL, SMALL, 1)).astype("float32")
    s, t = 0.5 * x[..., 0, 0, 0] + 0.5, -x[..., 0, 0, 0]  # what the two fixed models predict
    y = np.repeat((0.3 * t + 0.7 * s)[..., None], 6, axis=-1).astype("float32")
    got = start_gate_at_best_constant(fusion, tf.data.Dataset.from_tensor_slices((x, y)).batch(8))
    assert got == pytest.approx(0.3, abs=1e-5)
    np.testing.assert_allclose(gate_weights_model(fusion).predict(x, verbose=0), 0.3, atol=1e-5)
    np.testing.assert_allclose(fusion.predict(x, verbose=0), y, atol=1e-5)
    # noisy targets, a few far off: the distance and the squared error choose different weights
    noisy = y + rng.normal(0, 0.05, y.shape).astype("float32")
    noisy[:3] += 2.0 * (t - s)[:3, :, None]  # outliers that a weight near 1 would suit
    fused = {w: np.repeat((w * t + (1 - w) * s)[..., None], 6, axis=-1) for w in np.round(np.linspace(0, 1, 21), 2)}
    by_distance = {w: np.linalg.norm((f - noisy).reshape(-1, 3), axis=-1).mean() for w, f in fused.items()}
    by_square = {w: ((f - noisy) ** 2).mean() for w, f in fused.items()}
    data = tf.data.Dataset.from_tensor_slices((x, noisy)).batch(8)
    assert start_gate_at_best_constant(fusion, data) == min(by_distance, key=by_distance.get)
    assert start_gate_at_best_constant(fusion, data, loss="l2") == min(by_square, key=by_square.get)
    assert min(by_distance, key=by_distance.get) < min(by_square, key=by_square.get)


@pytest.mark.slow
def test_occlusion_labels_survive_import_tfrecord_and_dataset(tmp_path):
    from keras_cadstn.config import SynthConfig
    from keras_cadstn.data import make_dataset
    from keras_cadstn.data.nyu import OCCLUSION_FILE, load_nyu
    from keras_cadstn.data.synthetic import write_synthetic_nyu
    from keras_cadstn.data.tfrecord import convert_split
    root = str(tmp_path / "synth")
    write_synthetic_nyu(root, frames_per_sequence=60, train_sequences=1, test_sequences=1, seed=4,
                        config=SynthConfig(events=True, occluders_per_100_frames=4.0), progress=False)
    written = np.loadtxt(os.path.join(root, "train", OCCLUSION_FILE))
    assert written.shape == (60,) and (written > 0.05).sum() >= 3 and (written == 0).sum() >= 3
    split = load_nyu(root, "train")
    np.testing.assert_allclose([f.occlusion for f in split.frames], written)
    convert_split(split, str(tmp_path / "rec"), shards=2, image_size=SMALL, progress=False)
    occ = np.concatenate([meta["occlusion"].numpy() for _, _, meta in make_dataset(
        str(tmp_path / "rec" / "*.tfrecord"), batch_size=16, include_meta=True)])
    kept = [f.frame_index for f in split.frames]  # (frames without a hand would be skipped)
    np.testing.assert_allclose(occ, written[kept][:len(occ)], atol=1e-6)
    assert len(occ) >= 58


@pytest.mark.slow
def test_occluded_frames_hide_the_hand_and_clean_ones_do_not():
    from keras_cadstn.config import SynthConfig
    from keras_cadstn.data.synthetic import SequenceRenderer
    plain = SequenceRenderer(9, SynthConfig())
    events = SequenceRenderer(9, SynthConfig(events=True, occluders_per_100_frames=6.0, speeds=(1.0,)))
    hidden = []
    for t in range(60):
        d0, j0 = plain.render(t)
        d1, j1 = events.render(t)
        np.testing.assert_allclose(j0, j1)  # the same hand motion: events come from their own stream
        assert plain.last_occlusion == 0.0
        hidden.append(events.last_occlusion)
        if not any(e.active(t) for e in events.events):
            assert events.last_occlusion == 0.0
    assert max(hidden) > 0.2


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["0.5\n" * 3, "x\n" * 60, "1.5\n" * 60])
def test_bad_occlusion_file_is_named(tmp_path, bad):
    from keras_cadstn.data.nyu import OCCLUSION_FILE, load_nyu
    from keras_cadstn.data.synthetic import write_synthetic_nyu
    from keras_cadstn.errors import DataError
    root = str(tmp_path / "s")
    write_synthetic_nyu(root, frames_per_sequence=60, train_sequences=1, test_sequences=1, seed=1, progress=False)
    (tmp_path / "s" / "train" / OCCLUSION_FILE).write_text(bad)
    with pytest.raises(DataError, match=OCCLUSION_FILE):
        load_nyu(root, "train")


@pytest.mark.slow
def test_accuracy_benchmark_quick_fills_every_row_and_column(tmp_path, capsys):
    import json
    bench = _load_benchmark("bench_accuracy")
    out = tmp_path / "out"
    assert bench.main(["--quick", "--workdir", str(tmp_path / "work"), "--out", str(out),
                       "--temporal-init", "baseline_finetune", "baseline_frozen"]) == 0
    # the second temporal variant reuses each seed's Baseline, Sliced 3D and Spatial stages
    printed = capsys.readouterr().out
    assert printed.count("[baseline] training") == 2 and printed.count("[spatial] training") == 2
    assert printed.count("[temporal] training") == 4
    result = json.loads((out / "accuracy.json").read_text())
    assert set(result["temporal_variants"]) == {"baseline_finetune", "baseline_frozen"}
    methods = {"Baseline", "Sliced 3D", "Spatial", "Temporal", "CADSTN", "Fixed w (val)"}
    for subset in ("all", "clean", "occluded"):
        assert set(result["errors"][subset]) == methods
        assert all(v["n"] == 2 for v in result["errors"][subset].values())
        assert len(result["differences"][subset]) == 5
    d = result["differences"]["all"]["Temporal - Baseline"]
    per_seed = result["per_seed"]
    assert d["mean"] == pytest.approx(np.mean([s["all"]["Temporal"] - s["all"]["Baseline"] for s in per_seed]))
    assert d["low"] < d["mean"] < d["high"]
    assert len(result["w_val"]) == 2 and result["oracle_mm"] > 0
    gap, gates = result["gate_w1_occluded_minus_clean"], result["gate_w1_per_seed"]
    if not np.isnan(gap["mean"]):  # the quick test split may hold no occluded frame
        assert gap["mean"] == pytest.approx(np.mean(np.subtract(gates["occluded"], gates["clean"])))
    assert (out / "gate_vs_occlusion.png").stat().st_size > 1000 and "| Temporal - Baseline |" in (out / "accuracy.md").read_text()
    parts = result["error_parts"]
    for subset in ("clean", "occluded"):  # the articulation never exceeds the whole error
        for m in methods:
            if not np.isnan(parts["articulation"][subset][m]["mean"]):
                assert parts["articulation"][subset][m]["mean"] <= result["errors"][subset][m]["mean"] + 1e-6
    assert "| Temporal - Baseline (paired, 95% interval) |" in (out / "accuracy.md").read_text()


def _load_benchmark(name):
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
