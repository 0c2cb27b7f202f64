import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_cadstn.camera import Camera
from keras_cadstn.data.preprocessing import joints_to_mm
from keras_cadstn.errors import DataError, ParityError
from keras_cadstn.export import tflite as tflite_module
from keras_cadstn.export.artifacts import (
    FLOAT_STEP_PRECISIONS,
    MODELS,
    PRECISIONS,
    TOLERANCE_MM,
    fold_artifact_model,
    keras_artifact_model,
    representative_inputs,
)
from keras_cadstn.export.onnx_export import export_onnx
from keras_cadstn.export.saved_model import export_saved_model
from keras_cadstn.export.tracker import export_step
from keras_cadstn.fileio import file_sha256
from keras_cadstn.export.tflite import convert_tflite, export_tflite, float_weights_at_full_resolution
from keras_cadstn.models.bundle import SPEC_FILE, load_bundle
from keras_cadstn.tracking.runtime import ONNXRunner, TFLiteRunner, sample_clips


@pytest.fixture(scope="module")
def samples(tiny_bundle):
    return sample_clips(tiny_bundle, num_clips=2)


@pytest.mark.slow
def test_bundle_round_trip_carries_the_preprocessing(tiny_bundle, samples):
    meta = json.load(open(os.path.join(tiny_bundle.path, SPEC_FILE)))
    assert meta["dataset"]["camera"] == {"fx": 588.03, "fy": 587.07, "cx": 320.0, "cy": 240.0, "width": 640,
                                         "height": 480, "depth_unit_mm": 1.0}
    assert meta["dataset"]["cube"] == [300.0, 300.0, 300.0] and meta["image_size"] == 32 and meta["seq_len"] == 4
    assert len(meta["dataset"]["joint_names"]) == 14
    again = load_bundle(tiny_bundle.path)
    np.testing.assert_allclose(again.model.predict_on_batch(samples.clip_inputs(again.model)),
                               tiny_bundle.model.predict_on_batch(samples.clip_inputs(tiny_bundle.model)), atol=1e-6)
    other = Camera(300.0, 296.0, 165.0, 118.0, 320, 240, depth_unit_mm=1000.0)
    assert load_bundle(tiny_bundle.path, camera=other).camera == other
    assert tiny_bundle.camera.fx == 588.03  # with_camera returns a new bundle


def test_bundle_errors_name_the_file(tiny_bundle, tmp_path):
    with pytest.raises(DataError, match="not a keras_cadstn bundle"):
        load_bundle(str(tmp_path))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / SPEC_FILE).write_text("{not json")
    with pytest.raises(DataError, match="bundle.json: not valid JSON"):
        load_bundle(str(bad))
    (bad / SPEC_FILE).write_text(json.dumps({"format": "something else", "version": 1}))
    with pytest.raises(DataError, match="expected format"):
        load_bundle(str(bad))


@pytest.mark.slow
def test_bundle_refuses_a_model_that_does_not_match_its_network_options(tiny_bundles, tmp_path):
    import shutil

    from keras_cadstn.models.bundle import MODEL_FILE, save_bundle
    with_motion, without = tiny_bundles["ours"], tiny_bundles["paper"]
    with pytest.raises(ValueError, match="reads the centre motion, its config says centre_motion=False"):
        save_bundle(str(tmp_path / "b"), with_motion.model, with_motion.spec, without.config)
    with pytest.raises(ValueError, match="gate reads the crop, its config says gate_input='predictions'"):
        save_bundle(str(tmp_path / "b"), without.model, without.spec, with_motion.config.replace(centre_motion=False))
    mixed = tmp_path / "mixed"
    shutil.copytree(without.path, mixed)
    shutil.copy(os.path.join(with_motion.path, MODEL_FILE), mixed / MODEL_FILE)
    with pytest.raises(DataError, match="cadstn.keras: damaged or replaced since the bundle was written"):
        load_bundle(str(mixed))
    meta = json.loads((mixed / SPEC_FILE).read_text())
    del meta["sha256"]  # a bundle written before its files' hashes were recorded: the model itself is checked
    (mixed / SPEC_FILE).write_text(json.dumps(meta))
    with pytest.raises(DataError, match="reads the centre motion, the bundle's JSON says centre_motion=False"):
        load_bundle(str(mixed))


@pytest.mark.slow
def test_saved_model_derives_the_centre_motion_from_the_centres(tiny_bundles, samples, tmp_path):
    """A temporal network that reads the centre motion: the serving signature takes the same
    clips, centres and cubes and computes the motion itself (zero at each clip's first frame)."""
    import tensorflow as tf
    bundle = tiny_bundles["ours"]
    report = export_saved_model(bundle, str(tmp_path), samples=samples)
    assert report.max_abs_mm <= 0.01
    seq = tf.saved_model.load(report.path).signatures["predict_sequence"]
    assert set(seq.structured_input_signature[1]) == {"clips", "center_xyz", "cube"}
    out = seq(clips=tf.constant(samples.clips), center_xyz=tf.constant(samples.center_xyz), cube=tf.constant(samples.cube))
    motion = np.zeros_like(samples.center_xyz)
    motion[:, 1:] = (samples.center_xyz[:, 1:] - samples.center_xyz[:, :-1]) / 150.0
    assert np.abs(motion).max() > 0.005  # the sample hand moves
    ref = bundle.model.predict_on_batch([samples.clips, motion])
    np.testing.assert_allclose(out["joints_normalized"].numpy(), ref, atol=1e-5)
    still = bundle.model.predict_on_batch([samples.clips, np.zeros_like(motion)])
    assert np.abs(still - ref).max() > 1e-4  # so the comparison above sees the motion


def test_samples_are_real_hand_crops(samples):
    assert samples.clips.shape == (2, 4, 32, 32, 1)
    hand = samples.clips < 1.0
    assert hand.mean() > 0.1 and samples.clips.min() >= -1.0  # a hand, inside the cube


@pytest.mark.slow
def test_saved_model_serving_layout_signatures_and_predict_request(tiny_bundle, samples, tmp_path):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    report = export_saved_model(tiny_bundle, str(tmp_path), name="cadstn", version=3, samples=samples)
    assert report.path == str(tmp_path / "cadstn" / "3") and report.max_abs_mm <= 0.01
    assert (tmp_path / "cadstn" / "3" / "saved_model.pb").is_file()
    assert json.load(open(tmp_path / "cadstn" / "3" / "assets.extra" / SPEC_FILE))["image_size"] == 32
    assert sorted(os.listdir(tmp_path / "cadstn")) == ["3"]  # no temporary left for TF Serving to see

    loaded = tf.saved_model.load(report.path)
    assert {"serving_default", "predict_sequence", "predict_frames", "refine_centre"} <= set(loaded.signatures)
    seq = loaded.signatures["predict_sequence"]
    assert set(seq.structured_input_signature[1]) == {"clips", "center_xyz", "cube"}
    assert set(seq.structured_outputs) == {"joints_mm", "joints_normalized"}

    # a TF Serving PredictRequest, serialised and parsed as the server would, then run
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "cadstn", "predict_sequence"
    for name, value in (("clips", samples.clips), ("center_xyz", samples.center_xyz), ("cube", samples.cube)):
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    parsed = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert parsed.model_spec.signature_name == "predict_sequence"
    feeds = {k: tf.constant(tf.make_ndarray(v)) for k, v in parsed.inputs.items()}
    out = loaded.signatures[parsed.model_spec.signature_name](**feeds)
    ref = tiny_bundle.model.predict_on_batch(samples.clip_inputs(tiny_bundle.model))
    assert out["joints_mm"].shape == (2, 4, 14, 3)
    np.testing.assert_allclose(out["joints_mm"].numpy(), joints_to_mm(ref, samples.center_xyz, samples.cube), atol=1e-2)
    # joints_mm by hand for one joint: normalised * cube / 2 + centre
    n = out["joints_normalized"].numpy()[1, 2, 3:6]
    np.testing.assert_allclose(out["joints_mm"].numpy()[1, 2, 1], n * 150.0 + samples.center_xyz[1, 2], atol=1e-3)

    frames = loaded.signatures["predict_frames"](crops=tf.constant(samples.crops),
                                                 center_xyz=tf.constant(samples.center_xyz.reshape(-1, 3)),
                                                 cube=tf.constant(samples.cube.reshape(-1, 3)))
    np.testing.assert_allclose(frames["joints_normalized"].numpy(),
                               tiny_bundle.spatial_model().predict_on_batch(samples.crops), atol=1e-5)

    # the bundle's centre refiner: offset to the reference joint, normalised and in mm (x cube / 2)
    crops = samples.refiner_crops(16)
    assert crops.shape == (len(samples.crops), 16, 16, 1)
    refined = loaded.signatures["refine_centre"](crops=tf.constant(crops), cube=tf.constant(samples.cube.reshape(-1, 3)))
    offset = tiny_bundle.refiner.predict_on_batch(crops)
    np.testing.assert_allclose(refined["offset_normalized"].numpy(), offset, atol=1e-5)
    np.testing.assert_allclose(refined["offset_mm"].numpy(), offset * 150.0, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("which", MODELS)
def test_tflite_and_onnx_match_keras(tiny_bundle, samples, tmp_path, which):
    reports = {p: export_tflite(tiny_bundle, str(tmp_path / f"{which}_{p}.tflite"), which, p, samples)
               for p in PRECISIONS}
    assert reports["float32"].max_abs_mm <= 0.01
    assert reports["float32"].max_abs_mm <= reports["float16"].max_abs_mm  # reduced precision adds error
    assert reports["int8"].size_bytes < reports["float16"].size_bytes < reports["float32"].size_bytes
    assert reports["dynamic_int8"].size_bytes < reports["float16"].size_bytes
    assert sorted(os.listdir(tmp_path)) == sorted(f"{which}_{p}.tflite" for p in PRECISIONS)

    # recomputed here, independently of the exporter's own check
    model = keras_artifact_model(tiny_bundle, which)
    runner = TFLiteRunner(str(tmp_path / f"{which}_float32.tflite"))
    onnx_report = export_onnx(tiny_bundle, str(tmp_path / f"{which}.onnx"), which, samples=samples)
    assert onnx_report.max_abs_mm <= 0.01
    onnx_runner = ONNXRunner(str(tmp_path / f"{which}.onnx"))
    crop = samples.crops[:1]
    if which == "spatial":
        ref = model.predict_on_batch(crop)
        got, got_onnx = runner(crop=crop)["joints"], onnx_runner(crop=crop)["joints"]
    elif which == "refine":
        crop = samples.refiner_crops(16)[:1]
        ref = model.predict_on_batch(crop)
        got, got_onnx = runner(crop=crop)["offset"], onnx_runner(crop=crop)["offset"]
        assert ref.shape == (1, 3)
    else:
        h = np.random.default_rng(0).normal(size=(1, 16)).astype("float32")
        ref = model.predict_on_batch([crop, h, h])[0]
        got = runner(crop=crop, lstm_h=h, lstm_c=h)["joints"]
        got_onnx = onnx_runner(crop=crop, lstm_h=h, lstm_c=h)["joints"]
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_allclose(got_onnx, ref, atol=1e-5)

    import onnx
    graph = onnx.load(str(tmp_path / f"{which}.onnx"))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17


@pytest.mark.slow
def test_sliced_volume_survives_full_integer_quantisation(samples):
    """int8 TFLite of the slicing alone: the hand mask stays exact and a pixel moves at most to the
    next slice (a select-based slicing once put every background pixel into the hand when
    quantised). Moves are expected: the 8-bit input steps ~0.8 mm, slices here are ~9.5 mm."""
    import keras

    from keras_cadstn.data.preprocessing import slice_volume
    from keras_cadstn.models.layers import SliceVolume
    crop = keras.Input(samples.crops.shape[1:], name="crop")
    model = keras.Model(crop, SliceVolume(8)(crop))
    data = convert_tflite(model, "int8", lambda: ([c[None]] for c in samples.crops))
    runner = TFLiteRunner(data)
    got = np.concatenate([runner(crop=c[None])["joints"] for c in samples.crops])
    ref = np.asarray(slice_volume(samples.crops, 8))
    np.testing.assert_array_equal(got.sum(-1), ref.sum(-1))  # same hand pixels, each in one slice
    hand = ref.sum(-1) > 0
    shift = got.argmax(-1)[hand] - ref.argmax(-1)[hand]
    assert np.abs(shift).max() <= 1 and np.mean(shift != 0) < 0.1, np.unique(shift, return_counts=True)
    with pytest.raises(ValueError, match="int8 needs representative"):
        convert_tflite(model, "int8")


@pytest.mark.slow
def test_float_graphs_slice_with_float_steps(tiny_bundle, samples):
    """float32 and dynamic_int8 TFLite convert the step with the slicing's comparisons as float
    steps (no comparison op left; the same volume); float16 and int8 keep the comparisons."""
    import keras

    from keras_cadstn.data.preprocessing import slice_volume
    from keras_cadstn.models.layers import SliceVolume

    def op_names(data):
        return {op["op_name"] for op in TFLiteRunner(data).interpreter._get_ops_details()}
    step = keras_artifact_model(tiny_bundle, "step")
    for precision, float_steps in (("float32", True), ("dynamic_int8", True), ("float16", False)):
        folded = fold_artifact_model(step, "step", precision in FLOAT_STEP_PRECISIONS)
        ops = op_names(convert_tflite(folded, precision))
        assert ("GREATER_EQUAL" not in ops) == float_steps, (precision, sorted(ops))
    crop = keras.Input(samples.crops.shape[1:], name="crop")
    runner = TFLiteRunner(convert_tflite(keras.Model(crop, SliceVolume(8, float_steps=True)(crop))))
    got = np.concatenate([runner(crop=c[None])["joints"] for c in samples.crops])
    np.testing.assert_array_equal(got, np.asarray(slice_volume(samples.crops, 8)))


@pytest.mark.slow
def test_dynamic_int8_keeps_float_weights_for_the_full_resolution_convolutions(rng):
    """dynamic_int8: the convolutions reading the largest feature maps get their int8 weights back
    as float32 (the int8 values times their scales, per output channel); the later ones stay int8."""
    import keras
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.tools import flatbuffer_utils

    keras.utils.set_random_seed(0)
    crop = keras.Input((32, 32, 8), name="crop")
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="full")(crop)  # 2,304 weights
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="half")(x)  # 18,432 weights
    model = keras.Model(crop, keras.layers.GlobalAveragePooling2D()(x))
    flatbuffer = convert_tflite(model, "dynamic_int8")
    plain = convert_tflite(model, "dynamic_int8", float_full_resolution=False)  # as converted
    assert float_weights_at_full_resolution(plain) == flatbuffer

    def conv_weights(data):  # (input height, weight tensor, its values) per CONV_2D, in graph order
        m = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
        g = m.subgraphs[0]
        out = []
        for op in g.operators:
            if flatbuffer_utils.opcode_to_name(m, op.opcodeIndex) == "CONV_2D":
                w = g.tensors[op.inputs[1]]
                dtype = np.float32 if w.type == 0 else np.int8
                out.append((int(g.tensors[op.inputs[0]].shape[1]), w,
                            np.frombuffer(bytes(m.buffers[w.buffer].data), dtype).reshape(w.shape)))
        return out
    (size_q, full_q, values_q), (_, half_q, _) = conv_weights(plain)
    (size, full, values), (_, half, _) = conv_weights(flatbuffer)
    assert (size_q, size) == (32, 32) and full_q.type == 9 and half_q.type == 9  # both int8 as converted
    assert full.type == 0 and half.type == 9  # float32 at full resolution only
    scales = np.asarray(full_q.quantization.scale, np.float32)[:, None, None, None]  # per output channel (OHWI)
    np.testing.assert_array_equal(values, values_q.astype(np.float32) * scales)
    kernel = np.transpose(model.get_layer("full").get_weights()[0], (3, 0, 1, 2))
    np.testing.assert_allclose(values, kernel, rtol=0, atol=float(scales.max()) / 2 + 1e-7)
    x = rng.random((1, 32, 32, 8)).astype(np.float32)
    expected = model.predict_on_batch(x)
    for data in (plain, flatbuffer):
        it = Interpreter(model_content=data)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        got = it.get_tensor(it.get_output_details()[0]["index"])
        assert np.abs(got - expected).mean() < 0.02 * np.abs(expected).mean()
    assert float_weights_at_full_resolution(flatbuffer) == flatbuffer  # nothing left to change


@pytest.mark.slow
def test_failed_parity_writes_nothing(tiny_bundle, samples, tmp_path, monkeypatch):
    monkeypatch.setitem(TOLERANCE_MM, "float16", 0.0)  # float16 always differs a little
    (tmp_path / "spatial.tflite").write_bytes(b"an older export of another model")
    with pytest.raises(ParityError, match="exceeds 0.0 mm; nothing written"):
        export_tflite(tiny_bundle, str(tmp_path / "spatial.tflite"), "spatial", "float16", samples)
    assert os.listdir(tmp_path) == []  # no temporary, and no stale artifact that looks like the result
    with pytest.raises(ValueError, match="precision must be one of"):
        export_tflite(tiny_bundle, str(tmp_path / "x.tflite"), "spatial", "int4", samples)
    with pytest.raises(ValueError, match="model must be one of"):
        export_onnx(tiny_bundle, str(tmp_path / "x.onnx"), "gate", samples=samples)


def _onnx_with(op_type, batch_dim):
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node(op_type, ["x"], ["y"])
    return helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])


def _export_trt_tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location("export_trt", TRT_TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TRT_TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "export_trt.py")


@pytest.mark.slow
def test_tensorrt_preflight(tiny_bundle, samples, tmp_path):
    import onnx
    trt = _export_trt_tool()
    path = str(tmp_path / "step.onnx")
    export_onnx(tiny_bundle, path, "step", samples=samples)
    shapes = trt.check_onnx_for_tensorrt(path, trt.BatchProfile(1, 2, 8))
    assert shapes["crop"] == ((1, 32, 32, 1), (2, 32, 32, 1), (8, 32, 32, 1))
    assert shapes["lstm_h"] == ((1, 16), (2, 16), (8, 16))

    onnx.save(_onnx_with("NonZero", "batch"), str(tmp_path / "nonzero.onnx"))
    with pytest.raises(ValueError, match="operators TensorRT cannot parse: NonZero"):
        trt.check_onnx_for_tensorrt(str(tmp_path / "nonzero.onnx"))
    onnx.save(_onnx_with("Relu", 1), str(tmp_path / "fixed.onnx"))
    with pytest.raises(ValueError, match="batch dimension is fixed"):
        trt.check_onnx_for_tensorrt(str(tmp_path / "fixed.onnx"))
    with pytest.raises(ValueError, match="min <= opt <= max"):
        trt.BatchProfile(4, 2, 8)

    tool = TRT_TOOL
    ok = subprocess.run([sys.executable, tool, "--onnx", path, "--engine", str(tmp_path / "e.engine"), "--check-only"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "OK for TensorRT" in ok.stdout
    try:
        import tensorrt  # noqa: F401
        has_trt = True
    except ImportError:
        has_trt = False
    if not has_trt:  # this machine: the tool must stop with a clear message and no engine
        out = subprocess.run([sys.executable, tool, "--onnx", path, "--engine", str(tmp_path / "e.engine")],
                             capture_output=True, text=True)
        assert out.returncode == 3 and "cannot build a TensorRT engine here" in out.stderr
        assert not (tmp_path / "e.engine").exists()
    bad = subprocess.run([sys.executable, tool, "--onnx", str(tmp_path / "nonzero.onnx"), "--engine", "x"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "NonZero" in bad.stderr


@pytest.mark.slow
def test_export_cli_calibrates_int8_on_its_own_records(tiny_bundle, synth_records, tmp_path, capsys, monkeypatch):
    from keras_cadstn import cli
    from keras_cadstn.data.splits import read_test_split
    train, test = os.path.join(synth_records, "train", "*.tfrecord"), os.path.join(synth_records, "test", "*.tfrecord")
    seen = []
    calibrate = representative_inputs
    monkeypatch.setattr(tflite_module, "representative_inputs",
                        lambda model, samples, which: (seen.append(samples.clips[0, 0]), calibrate(model, samples, which))[1])
    args = ["export", "--bundle", tiny_bundle.path, "--records", test, "--calibration-records", train,
            "--precisions", "int8", "--no-onnx", "--no-saved-model", "--clips", "2"]
    assert cli.main(args + ["--out", str(tmp_path / "ok")]) == 0
    assert sorted(os.listdir(tmp_path / "ok")) == ["refine_int8.tflite", "spatial_int8.tflite", "step_int8.tflite"]
    assert f"int8 calibrated on {train}" in capsys.readouterr().out
    first_train_crop = read_test_split(train)[0][0]
    assert len(seen) == 3 and all(np.array_equal(s, first_train_crop) for s in seen)  # not the test crops

    monkeypatch.setitem(TOLERANCE_MM, "int8", 0.0)
    assert cli.main(args + ["--out", str(tmp_path / "refused")]) == 1
    assert "REFUSED tflite spatial int8" in capsys.readouterr().out
    assert os.listdir(tmp_path / "refused") == []


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "swap"])
def test_a_damaged_export_in_the_cache_is_made_again(tiny_bundle, samples, tmp_path, monkeypatch, damage, caplog):
    monkeypatch.setenv("KERAS_CADSTN_CACHE", str(tmp_path / "cache"))
    path = export_step(tiny_bundle, "tflite", "float32", samples=samples)
    good = open(path, "rb").read()
    other = export_step(tiny_bundle, "tflite", "float16", samples=samples)
    open(path, "wb").write(good[: len(good) // 2] if damage == "truncate" else open(other, "rb").read())
    again = export_step(tiny_bundle, "tflite", "float32", samples=samples)
    assert again == path and "exporting again" in caplog.text
    assert file_sha256(path) == open(path + ".sha256").read().strip()
    assert TFLiteRunner(path) is not None  # the re-made file loads


def test_records_of_another_crop_size_are_refused_in_one_line(synth_records, tmp_path, capsys):
    from conftest import make_tiny_bundle

    from keras_cadstn import cli
    bundle = make_tiny_bundle(tmp_path, image_size=64)  # the records are 32x32
    train = os.path.join(synth_records, "train", "*.tfrecord")
    for argv in (["compress", "--bundle", bundle.path, "--fc-rank", "4", "--records", train],
                 ["export", "--bundle", bundle.path, "--out", str(tmp_path / "x"), "--records", train]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "records of 32x32 crops, the bundle's networks read 64x64" in err[0], err
    assert not (tmp_path / "x").exists()
