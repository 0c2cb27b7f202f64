import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_cadstn
from keras_cadstn.config import CADSTNConfig
from keras_cadstn.models import (
    build_baseline_network,
    build_cadstn,
    build_fusion_network,
    build_sliced3d_network,
    build_spatial_network,
    build_temporal_network,
    build_temporal_stream,
    gate_weights_model,
    get_submodel,
    init_encoder_from_baseline,
    spatial_inference_model,
)

SMALL = CADSTNConfig(image_size=32, seq_len=4, fc_units=16, lstm_units=8)


def conv(k, cin, cout):
    return k * k * cin * cout + cout


def dense(n_in, n_out):
    return n_in * n_out + n_out


# The paper's configuration, counted by hand from docs/architecture.md (K = 14, M = 128, L = 8).
K3 = 3 * 14
DEPTH_TRUNK = conv(3, 1, 32) + conv(3, 32, 64) + conv(3, 64, 128)  # 92,672
VOL_TRUNK = (conv(3, 8, 32) + conv(1, 32, 32) + conv(3, 32, 64) + conv(1, 64, 64)
             + conv(3, 64, 128) + conv(1, 128, 128))  # 116,416
FLAT = 8 * 8 * 128  # 128 / 4 / 2 / 2 = 8
HEAD = dense(FLAT, 1024) + dense(1024, 1024) + dense(1024, K3)
BASELINE = DEPTH_TRUNK + HEAD  # 9,574,954
SLICED3D = VOL_TRUNK + HEAD
SPATIAL = DEPTH_TRUNK + VOL_TRUNK + 2 * dense(FLAT, 1024) + 2 * dense(1024, 1024) + 3 * dense(1024, K3)
SPATIAL_INFERENCE = SPATIAL - 2 * dense(1024, K3)
LSTM = 4 * (1024 * 1024 + 1024 * 1024 + 1024)
TEMPORAL = DEPTH_TRUNK + dense(FLAT, 1024) + LSTM + dense(2048, K3)
GATE = BASELINE  # the same shape, sigmoid output
CADSTN = SPATIAL_INFERENCE + TEMPORAL + GATE  # the fused model runs the spatial main path only
# ours: the centre motion (3 numbers) joins phi at the LSTM's input and at the last fc; the prediction
# gate reads J_spa, J_temp, their difference and the motion through fc(64) -> fc(3K)
TEMPORAL_MOTION = DEPTH_TRUNK + dense(FLAT, 1024) + 4 * (1027 * 1024 + 1024 * 1024 + 1024) + dense(2051, K3)
PREDICTION_GATE = dense(3 * K3 + 3, 64) + dense(64, K3)  # 11,050
PAPER = CADSTNConfig(centre_motion=False, gate_input="crop")
OURS = CADSTNConfig(centre_motion=True, gate_input="predictions")


@pytest.mark.slow
def test_parameter_counts_of_the_paper_configuration():
    assert BASELINE == 9_574_954 and SPATIAL == 19_216_702
    assert build_baseline_network(PAPER).count_params() == BASELINE
    assert build_sliced3d_network(PAPER).count_params() == SLICED3D
    spatial = build_spatial_network(PAPER)
    assert spatial.count_params() == SPATIAL
    assert spatial_inference_model(spatial).count_params() == SPATIAL_INFERENCE
    assert build_temporal_network(PAPER).count_params() == TEMPORAL
    model = build_cadstn(config=PAPER)
    assert model.count_params() == CADSTN
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == GATE  # only the gate trains in the fusion stage


@pytest.mark.slow
def test_parameter_counts_with_our_options_at_the_paper_size():
    assert PREDICTION_GATE == 11_050
    assert build_temporal_network(OURS).count_params() == TEMPORAL_MOTION
    model = build_cadstn(config=OURS)
    assert model.count_params() == SPATIAL_INFERENCE + TEMPORAL_MOTION + PREDICTION_GATE
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == PREDICTION_GATE


@pytest.mark.slow
@pytest.mark.parametrize("k", [14, 16])
def test_output_shapes_paper_configuration(k):
    cfg = CADSTNConfig(num_joints=k)
    assert build_spatial_network(cfg).output["joints"].shape == (None, 3 * k)
    assert build_temporal_network(cfg).output.shape == (None, 16, 3 * k)
    model = build_cadstn(num_joints=k)
    assert model.inputs[0].shape == (None, 16, 128, 128, 1) and model.output.shape == (None, 16, 3 * k)
    x = [np.ones((1,) + tuple(i.shape[1:]), np.float32) for i in model.inputs]
    out = model.predict(x if len(x) > 1 else x[0], verbose=0)
    assert out.shape == (1, 16, 3 * k) and np.isfinite(out).all()


def test_aux_paths_share_weights_with_main_path(rng):
    m = build_spatial_network(SMALL)
    dense_names = sorted(l.name for l in m.layers if isinstance(l, keras.layers.Dense))
    assert dense_names == ["aux_3d", "aux_depth", "h1_3d", "h1_depth", "h2_3d", "h2_depth", "joints"]
    inf = spatial_inference_model(m)
    assert all(a is b for a, b in zip(inf.get_layer("h1_depth").weights, m.get_layer("h1_depth").weights))
    x = rng.uniform(-1, 1, (2, 32, 32, 1)).astype("float32")
    before = m.predict(x, verbose=0)
    k = m.get_layer("h2_depth").kernel
    k.assign(k.numpy() * 2.0)
    after = m.predict(x, verbose=0)
    assert not np.allclose(before["aux_depth"], after["aux_depth"])  # aux path uses H2_depth
    assert not np.allclose(before["joints"], after["joints"])  # so does the main path
    np.testing.assert_allclose(before["aux_3d"], after["aux_3d"])  # the 3D aux path does not
    np.testing.assert_allclose(inf.predict(x, verbose=0), after["joints"], rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("gate_input", ["crop", "predictions"])
def test_fusion_weights_are_a_convex_combination(rng, gate_input):
    m = build_cadstn(config=SMALL.replace(gate_input=gate_input, centre_motion=False))
    last = get_submodel(m, "gate_network").get_layer("joints")
    np.testing.assert_array_equal(last.get_weights()[0], 0.0)  # an untrained gate is w1 = 0.5 everywhere
    last.set_weights([rng.normal(0, 1, w.shape).astype("float32") for w in last.get_weights()])
    with_w = keras.Model(m.inputs, [m.output, gate_weights_model(m).output])
    x = rng.uniform(-1, 1, (2, 4, 32, 32, 1)).astype("float32")
    j_out, w1 = [np.asarray(a) for a in with_w(x)]
    assert ((w1 > 0) & (w1 < 1)).all() and w1.std() > 0.01
    w2 = 1.0 - w1
    assert (w1 + w2 == 1.0).all()
    j_spa = spatial_inference_model(get_submodel(m, "spatial_network")).predict(x.reshape(-1, 32, 32, 1), verbose=0)
    j_temp = get_submodel(m, "temporal_network").predict(x, verbose=0)
    np.testing.assert_allclose(j_out, w1 * j_temp + w2 * j_spa.reshape(2, 4, -1), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_fusion_step_trains_only_the_gate(rng):
    m = build_cadstn(config=SMALL)
    frozen = [w.numpy().copy() for w in get_submodel(m, "spatial_network").weights + get_submodel(m, "temporal_network").weights]
    gate = [w.numpy().copy() for w in get_submodel(m, "gate_network").weights]
    x = rng.uniform(-1, 1, (4, 4, 32, 32, 1)).astype("float32")
    y = rng.normal(size=(4, 4, 42)).astype("float32")
    m.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    for name in ("frozen_spatial", "frozen_temporal"):  # inference mode even when training: no dropout
        layer = m.get_layer(name)
        np.testing.assert_array_equal(np.asarray(layer(x, training=True)), np.asarray(layer(x, training=True)))
    m.fit(x, y, epochs=2, verbose=0)
    after = get_submodel(m, "spatial_network").weights + get_submodel(m, "temporal_network").weights
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(frozen, after))
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(gate, get_submodel(m, "gate_network").weights))


@pytest.mark.slow
@pytest.mark.parametrize("centre_motion", [False, True], ids=["crops", "crops+motion"])
def test_streaming_step_equals_windowed_model(rng, centre_motion):
    t = build_temporal_network(SMALL.replace(seq_len=6, centre_motion=centre_motion))
    stream = build_temporal_stream(t)
    x = rng.uniform(-1, 1, (3, 6, 32, 32, 1)).astype("float32")
    motion = rng.normal(0, 0.1, (3, 6, 3)).astype("float32")
    ref = t.predict([x, motion] if centre_motion else x, verbose=0)
    if centre_motion:  # the motion changes the prediction
        assert np.abs(t.predict([x, motion * 0], verbose=0) - ref).max() > 1e-4
    h = np.zeros((3, 8), np.float32)
    c = np.zeros((3, 8), np.float32)
    for i in range(6):
        j, h, c = [np.asarray(a) for a in stream([x[:, i], h, c] + ([motion[:, i]] if centre_motion else []))]
        np.testing.assert_allclose(j, ref[:, i], atol=1e-5)
    assert all(a is b for a, b in zip(stream.get_layer("lstm_cell").weights, t.get_layer("lstm").weights))


def test_encoder_initialised_from_baseline_and_frozen(rng):
    base, t = build_baseline_network(SMALL), build_temporal_network(SMALL)
    init_encoder_from_baseline(t, base)
    enc = t.get_layer("frame_encoder").layer
    for name in ("conv1", "conv2", "conv3", "fc1"):
        for a, b in zip(enc.get_layer(name).get_weights(), base.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert not enc.trainable and t.get_layer("lstm").trainable


MOTION = {False: SMALL.replace(centre_motion=False), True: SMALL.replace(centre_motion=True)}


@pytest.mark.slow
@pytest.mark.parametrize("builder,centre_motion", [(b, False) for b in ("baseline", "sliced3d", "spatial")]
                         + [(b, m) for b in ("temporal", "cadstn", "cadstn, prediction gate", "stream")
                            for m in (False, True)])
def test_keras_save_load_round_trip(builder, centre_motion, tmp_path, rng):
    cfg = MOTION[centre_motion]
    models = {"baseline": lambda: build_baseline_network(cfg), "sliced3d": lambda: build_sliced3d_network(cfg),
              "spatial": lambda: build_spatial_network(cfg), "temporal": lambda: build_temporal_network(cfg),
              "cadstn": lambda: build_cadstn(config=cfg),
              "cadstn, prediction gate": lambda: build_cadstn(config=cfg.replace(gate_input="predictions")),
              "stream": lambda: build_temporal_stream(build_temporal_network(cfg))}
    m = models[builder]()
    x = [rng.uniform(-1, 1, (2,) + tuple(i.shape[1:])).astype("float32") for i in m.inputs]
    x = x if len(x) > 1 else x[0]
    assert isinstance(x, list) == (builder == "stream" or centre_motion)
    path = str(tmp_path / "m.keras")
    m.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    keras.tree.map_structure(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                             m(x), loaded(x))


def test_wrong_input_shape_names_the_expected_shape():
    m = build_baseline_network(SMALL)
    with pytest.raises(ValueError, match=r"expected shape=\(None, 32, 32, 1\)"):
        m(np.zeros((2, 64, 64, 1), np.float32))
    c = build_cadstn(config=SMALL)
    with pytest.raises(ValueError, match=r"expected shape=\(None, 4, 32, 32, 1\)"):
        c(np.zeros((2, 5, 32, 32, 1), np.float32))


def test_config_rejects_image_size_not_divisible_by_pooling():
    with pytest.raises(ValueError, match="multiple of 16"):
        CADSTNConfig(image_size=40)


JAX_SCRIPT = r"""
import os, sys, numpy as np
os.environ["KERAS_BACKEND"] = "jax"
import keras
assert keras.backend.backend() == "jax"
import keras_cadstn.models  # registers the custom layers
m = keras.models.load_model(sys.argv[1])
x = np.load(sys.argv[2])
out = m.predict(x, verbose=0)
out = out["joints"] if isinstance(out, dict) else out
np.save(sys.argv[3], np.asarray(out))
"""


@pytest.mark.slow
@pytest.mark.parametrize("builder", ["spatial", "cadstn"])
def test_jax_backend_matches_tensorflow(builder, tmp_path, rng):
    pytest.importorskip("jax")
    m = build_spatial_network(SMALL) if builder == "spatial" else build_cadstn(config=SMALL)
    x = rng.uniform(-1, 1, (2,) + tuple(m.input.shape[1:])).astype("float32")
    x[..., :4, :] = 1.0  # some background so the slicing sees both kinds of pixel
    m.save(str(tmp_path / "m.keras"))
    np.save(str(tmp_path / "x.npy"), x)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(tmp_path / "m.keras"), str(tmp_path / "x.npy"),
                    str(tmp_path / "y.npy")], check=True, env=env, timeout=300)
    ref = m.predict(x, verbose=0)
    ref = ref["joints"] if isinstance(ref, dict) else ref
    np.testing.assert_allclose(np.load(str(tmp_path / "y.npy")), ref, atol=1e-4)


def test_top_level_exports():
    assert keras_cadstn.build_cadstn is build_cadstn
    assert keras_cadstn.build_fusion_network is build_fusion_network


def test_folded_sliced_convolutions_compute_the_same_function(rng):
    from keras_cadstn.models import fold_sliced_convolutions, spatial_inference_model
    config = CADSTNConfig(image_size=32, fc_units=32, num_slices=8)
    spatial = spatial_inference_model(build_spatial_network(config))
    for layer in spatial.layers:  # non-zero biases, so b3 . W1 + b1 is exercised
        if layer.name.startswith("vol_conv"):
            w, b = layer.get_weights()
            layer.set_weights([w, rng.normal(size=b.shape).astype("float32") * 0.1])
    folded = fold_sliced_convolutions(spatial)
    crops = rng.uniform(-0.5, 0.5, (4, 32, 32, 1)).astype("float32")
    crops[:, :4] = 1.0  # some background
    np.testing.assert_allclose(folded.predict_on_batch(crops), spatial.predict_on_batch(crops), atol=1e-5)
    convs = [l.name for l in folded.layers if isinstance(l, keras.layers.Conv2D)]
    assert [n for n in convs if n.startswith("vol_")] == ["vol_conv1_folded", "vol_conv2_folded", "vol_conv3_folded"]
    # the 1x1 weights are gone: (32*32 + 32) + (64*64 + 64) + (128*128 + 128) fewer parameters
    assert spatial.count_params() - folded.count_params() == 32 * 33 + 64 * 65 + 128 * 129
    assert folded.get_layer("h1_depth") is spatial.get_layer("h1_depth")  # shared, not copied
