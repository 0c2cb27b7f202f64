"""Deployable artifacts of a bundle, each checked against the Keras model before it is reported.

- SavedModel in TF Serving's layout ``<dir>/<name>/<version>/`` with two signatures:
    ``predict_sequence`` (also ``serving_default``): ``clips`` (B, T, M, M, 1), ``center_xyz``
      (B, T, 3), ``cube`` (B, T, 3) -> ``joints_mm`` (B, T, K, 3), ``joints_normalized`` (B, T, 3K)
    ``predict_frames`` (the spatial network): ``crops`` (B, M, M, 1), ``center_xyz`` (B, 3),
      ``cube`` (B, 3) -> ``joints_mm`` (B, K, 3), ``joints_normalized`` (B, 3K)
  Crops are normalised depth ((d - centre_z) / (cube_z / 2), +1 for background, as the bundle's
  JSON says); centre/cube are the crop's (mm), so outputs come back in camera mm. The bundle's JSON
  is copied to ``assets.extra/bundle.json``.
- TFLite (LiteRT) float32 / float16 / dynamic_int8 (int8 weights) / int8 (full-integer) of the spatial network (``spatial``) and of one
  streaming CADSTN step (``step``: crop + LSTM state -> fused joints + new state), batch 1 (the
  LSTM step converts to builtin ops only with a static batch; docs/stack.md).
- ONNX (tf2onnx, opset >= 17) of the same two models, dynamic batch, run with onnxruntime.
- Where the bundle has a centre refiner (``keras_cadstn.refine``): the same TFLite precisions and
  ONNX of it (``refine``: crop (B, S, S, 1) -> offset (B, 3), cube-normalised), and a SavedModel
  signature ``refine_centre``: ``crops`` (B, S, S, 1), ``cube`` (B, 3) -> ``offset_mm``,
  ``offset_normalized`` (B, 3), the move from the crop's centre to the hand's reference joint.
TFLite and ONNX convert the models with the sliced branch's linear convolution pairs folded into
one (``fold_sliced_convolutions``: same function, fewer multiply-adds).

Every function writes to a temporary name, runs the artifact on real crops (synthetic hands rendered
with the bundle's camera, or test TFRecords), compares with Keras in mm and only then renames into
place; past the tolerance it raises ``ParityError`` and leaves nothing behind.
"""
from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np

from keras_cadstn import atomic
from keras_cadstn.errors import ConfigError, ParityError
from keras_cadstn.runtime import (KerasFunction, ONNXRunner, Samples, TFLiteRunner, as_step, check_fc_rank,
                                  run_step_over_clips,
                                  sample_clips)

# Largest allowed |artifact - Keras| in mm: float32 its max (0.01 mm: the same function); reduced
# precisions are reported and only guarded against gross breakage, by their mean. Their max is one
# outlier crop's: the demo bundle's full-integer int8 step has a mean of 0.9 mm and a max of 44 mm
# and tracks as well as float32, while a broken sliced volume (int8 comparing with +1 itself) gives 4.6 mm.
TOLERANCE_MM = {"float32": 0.01, "float16": 0.5, "dynamic_int8": 1.0, "int8": 2.5}
PRECISIONS = tuple(TOLERANCE_MM)
MODELS = ("spatial", "step", "refine")  # refine: only where the bundle has a refiner


@dataclasses.dataclass(frozen=True)
class ExportReport:
    path: str
    fmt: str  # saved_model | tflite | onnx
    model: str  # cadstn | spatial | step
    precision: str
    max_abs_mm: float
    mean_abs_mm: float
    size_bytes: int
    # low-rank fc layers (``models.low_rank``): the rank, and the mean |low-rank - full| in mm of
    # the Keras models on the same crops (the parity above is against the low-rank Keras model)
    fc_rank: int | None = None
    rank_mean_mm: float | None = None

    def line(self) -> str:
        rank = "" if self.fc_rank is None else (f" (fc rank {self.fc_rank}: mean {self.rank_mean_mm:.3f} mm from "
                                                f"the full-rank model)")
        return (f"{self.fmt:11s} {self.model:8s} {self.precision:8s} max |err| {self.max_abs_mm:.5f} mm, "
                f"mean {self.mean_abs_mm:.5f} mm, {self.size_bytes / 1e6:.2f} MB -> {self.path}{rank}")


def _errors_mm(reference_norm, artifact_norm, cube) -> tuple:
    """Max and mean |difference| in mm of two cube-normalised (..., 3K) predictions."""
    a = np.asarray(reference_norm, np.float64)
    b = np.asarray(artifact_norm, np.float64).reshape(a.shape)
    half = np.asarray(cube, np.float64).reshape(-1, 3)[0] / 2.0
    diff = np.abs(a - b).reshape(a.shape[:-1] + (-1, 3)) * half
    return float(diff.max()), float(diff.mean())


def _check_and_publish(report: ExportReport, tmp_path: str) -> ExportReport:
    """Rename the verified artifact into place; past the tolerance remove it AND any older artifact
    of the same name (a refused export must not leave a stale file that looks like its result)."""
    limit = TOLERANCE_MM[report.precision]
    statistic = "max" if report.precision == "float32" else "mean"
    measured = report.max_abs_mm if statistic == "max" else report.mean_abs_mm
    if not np.isfinite(report.max_abs_mm) or measured > limit:
        atomic.remove(tmp_path)
        atomic.remove(report.path)
        raise ParityError(f"{report.fmt} {report.model} {report.precision}: max |error| {report.max_abs_mm:.4f} mm, "
                          f"mean {report.mean_abs_mm:.4f} mm against the Keras model: the {statistic} exceeds "
                          f"{limit} mm; nothing written")
    atomic.publish(tmp_path, report.path)
    return dataclasses.replace(report, size_bytes=_size(report.path))


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


# ----------------------------------------------------------------------------- SavedModel

def export_saved_model(bundle, out_dir: str, name: str = "cadstn", version: int = 1,
                       samples: Samples | None = None) -> ExportReport:
    """Write ``<out_dir>/<name>/<version>/`` (TF Serving layout); the report's path is that folder.

    The version folder appears only once complete and verified (TF Serving watches ``<name>/`` and
    would otherwise load a half-written version).
    """
    import keras
    import tensorflow as tf

    from keras_cadstn.bundle import SPEC_FILE

    m, t, k = bundle.image_size, bundle.seq_len, bundle.spec.num_joints
    model, spatial = bundle.model, bundle.spatial_model()

    def to_mm(norm, center, cube):
        joints = tf.reshape(norm, tf.concat([tf.shape(norm)[:-1], [k, 3]], 0))
        return joints * (cube[..., None, :] / 2.0) + center[..., None, :]

    from keras_cadstn.models import uses_centre_motion
    reads_motion = uses_centre_motion(model)

    def predict_sequence(clips, center_xyz, cube):
        if reads_motion:  # the centres' frame-to-frame move, zero at each clip's first frame
            moved = (center_xyz[:, 1:] - center_xyz[:, :-1]) / (cube[:, 1:] / 2.0)
            norm = model([clips, tf.concat([tf.zeros_like(moved[:, :1]), moved], 1)], training=False)
        else:
            norm = model(clips, training=False)
        return {"joints_mm": to_mm(norm, center_xyz, cube), "joints_normalized": norm}

    def predict_frames(crops, center_xyz, cube):
        norm = spatial(crops, training=False)
        return {"joints_mm": to_mm(norm, center_xyz, cube), "joints_normalized": norm}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("predict_sequence", predict_sequence, input_signature=[
        tf.TensorSpec((None, t, m, m, 1), tf.float32, name="clips"),
        tf.TensorSpec((None, t, 3), tf.float32, name="center_xyz"),
        tf.TensorSpec((None, t, 3), tf.float32, name="cube")])
    archive.add_endpoint("predict_frames", predict_frames, input_signature=[
        tf.TensorSpec((None, m, m, 1), tf.float32, name="crops"),
        tf.TensorSpec((None, 3), tf.float32, name="center_xyz"),
        tf.TensorSpec((None, 3), tf.float32, name="cube")])
    refiner = bundle.refiner
    if refiner is not None:
        archive.track(refiner)
        s = bundle.refiner_config.image_size

        def refine_centre(crops, cube):
            norm = refiner(crops, training=False)
            return {"offset_mm": norm * cube / 2.0, "offset_normalized": norm}
        archive.add_endpoint("refine_centre", refine_centre, input_signature=[
            tf.TensorSpec((None, s, s, 1), tf.float32, name="crops"),
            tf.TensorSpec((None, 3), tf.float32, name="cube")])

    path = os.path.join(out_dir, name, str(int(version)))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = atomic.temporary_path(path)
    atomic.remove(tmp)
    archive.write_out(tmp, verbose=False)
    os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
    shutil.copy(os.path.join(bundle.path, SPEC_FILE), os.path.join(tmp, "assets.extra", SPEC_FILE))

    samples = samples or sample_clips(bundle)
    loaded = tf.saved_model.load(tmp)
    seq = loaded.signatures["predict_sequence"](clips=tf.constant(samples.clips), center_xyz=tf.constant(samples.center_xyz),
                                                cube=tf.constant(samples.cube))
    frames = loaded.signatures["predict_frames"](crops=tf.constant(samples.crops),
                                                 center_xyz=tf.constant(samples.center_xyz.reshape(-1, 3)),
                                                 cube=tf.constant(samples.cube.reshape(-1, 3)))
    ref_seq = model.predict_on_batch(samples.clip_inputs(model))
    ref_frames = spatial.predict_on_batch(samples.crops)
    errs = [_errors_mm(ref_seq, seq["joints_normalized"].numpy(), samples.cube),
            _errors_mm(ref_frames, frames["joints_normalized"].numpy(), samples.cube)]
    if refiner is not None:
        crops, cube = samples.refiner_crops(bundle.refiner_config.image_size), samples.cube.reshape(-1, 3)
        refined = loaded.signatures["refine_centre"](crops=tf.constant(crops), cube=tf.constant(cube))
        ref_offset = refiner.predict_on_batch(crops)
        errs.append(_errors_mm(ref_offset, refined["offset_normalized"].numpy(), samples.cube))
        errs.append((float(np.abs(refined["offset_mm"].numpy() - ref_offset * cube / 2.0).max()), 0.0))
    # the mm outputs must be the normalised ones mapped back with the same centre/cube
    from keras_cadstn.preprocessing import joints_to_mm
    mm_err = np.abs(seq["joints_mm"].numpy() - joints_to_mm(ref_seq, samples.center_xyz, samples.cube)).max()
    report = ExportReport(path, "saved_model", "cadstn", "float32", max(max(e[0] for e in errs), float(mm_err)),
                          float(np.mean([e[1] for e in errs])), _size(tmp))
    return _check_and_publish(report, tmp)


# ----------------------------------------------------------------------------- TFLite

def _input_specs(keras_model, batch):
    import tensorflow as tf
    return [tf.TensorSpec((batch,) + tuple(x.shape[1:]), tf.float32, name=x.name.split(":")[0])
            for x in keras_model.inputs]


def _output_names(keras_model) -> list:
    if keras_model.name == "centre_refiner":
        return ["offset"]
    return ["joints", "lstm_h_out", "lstm_c_out"][:len(keras_model.outputs)]


def _named_tf_function(keras_model):
    """The Keras model as a tf.function with named outputs (inputs are named by their specs)."""
    import tensorflow as tf
    names = _output_names(keras_model)

    def fn(*args):
        outs = keras_model(list(args) if len(args) > 1 else args[0], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return {n: tf.identity(o, name=n) for n, o in zip(names, outs)}

    return tf.function(fn)


def keras_artifact_model(bundle, which: str, fc_rank: int | None = None):
    """The Keras model an artifact is checked against (what is converted: ``fold_artifact_model``
    of it). ``fc_rank``: the pose models (spatial, step) of the bundle's step with low-rank fc
    layers of that rank (``bundle.add_low_rank_step``); the centre refiner is small and always
    exported as it is."""
    if which not in MODELS:
        raise ConfigError(f"model must be one of {MODELS}, got {which!r}")
    fc_rank = check_fc_rank(fc_rank)
    if which == "refine":
        if bundle.refiner is None:
            raise ConfigError(f"{bundle.path}: the bundle has no centre refiner to export")
        return bundle.refiner
    if which == "spatial" and fc_rank is None:
        return bundle.spatial_model()
    step = bundle.step_model(fc_rank)
    return step if which == "step" else step.get_layer("spatial_inference")


# TFLite precisions whose graphs compute in float32, where the slicing's comparisons may be
# written as float steps (``slice_volume``): not float16 (the scale overflows it) nor int8
FLOAT_STEP_PRECISIONS = ("float32", "dynamic_int8")


def fold_artifact_model(model, which: str, float_steps: bool = False):
    """What is converted for an artifact's Keras ``model`` (``keras_artifact_model``): the same
    function with the sliced branch's linear convolution pairs folded into one and, with
    ``float_steps``, the slicing's comparisons as float steps (``fold_sliced_convolutions``);
    every other layer shared."""
    from keras_cadstn.models import fold_sliced_convolutions
    from keras_cadstn.models.streaming import build_streaming_cadstn, streaming_parts
    if which == "refine":
        return model
    if which == "spatial":
        return fold_sliced_convolutions(model, float_steps)
    spatial, temporal, gate = streaming_parts(model)
    return build_streaming_cadstn(fold_sliced_convolutions(spatial, float_steps), temporal, gate)


def _rank_error_mm(bundle, which: str, low_rank_keras, samples: Samples) -> float:
    """Mean |low-rank - full-rank| in mm of the Keras pose models over ``samples``."""
    full = keras_artifact_model(bundle, which)
    if which == "spatial":
        return _errors_mm(full.predict_on_batch(samples.crops), low_rank_keras.predict_on_batch(samples.crops),
                          samples.cube)[1]
    units = full.inputs[1].shape[-1]
    return _errors_mm(run_step_over_clips(as_step(KerasFunction(full)), units, samples),
                      run_step_over_clips(as_step(KerasFunction(low_rank_keras)), units, samples), samples.cube)[1]


def representative_inputs(step_or_spatial, samples: Samples, which: str):
    """int8 calibration data, one dict of named inputs per frame (batch 1): real crops and, for the
    step, the LSTM states they produce clip by clip from zero state."""
    if which != "step":
        for crop in _single_frame_inputs(step_or_spatial, samples, which):
            yield {"crop": crop[None]}
        return
    feeds = []
    keras_fn = KerasFunction(step_or_spatial)
    keras_, reads_motion = as_step(keras_fn), "centre_motion" in keras_fn.input_names

    def recording(crop, h, c, motion):
        feeds.append({"crop": crop, "lstm_h": h, "lstm_c": c, **({"centre_motion": motion} if reads_motion else {})})
        return keras_(crop, h, c, motion)

    run_step_over_clips(recording, step_or_spatial.inputs[1].shape[-1], samples, clips_at_once=False)
    yield from feeds


def _single_frame_inputs(keras_model, samples: Samples, which: str) -> np.ndarray:
    """The crops a one-frame model (spatial network or centre refiner) is checked and calibrated on."""
    return samples.refiner_crops(keras_model.input.shape[1]) if which == "refine" else samples.crops


def convert_tflite(keras_model, precision: str = "float32", representative=None,
                   float_full_resolution: bool = True) -> bytes:
    """A Keras model as a TFLite flatbuffer (batch 1, inputs/outputs named as in the model).

    ``representative``: for int8, a callable returning an iterator of input lists/dicts (the
    calibration data). ``float_full_resolution`` (dynamic_int8): the convolutions at the largest
    feature maps with float32 weights (``float_weights_at_full_resolution``); False: as converted.
    Goes through a SavedModel: ``from_concrete_functions`` on a Keras 3 model gave garbage weights
    (NaN out of the first conv) in TF 2.21; this route matches Keras to ~1e-7.
    """
    import tempfile

    import keras
    import tensorflow as tf
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and representative is None:
        raise ConfigError("int8 needs representative (calibration) inputs")
    staging = tempfile.mkdtemp(prefix="cadstn_tflite_")
    try:
        archive = keras.export.ExportArchive()
        archive.track(keras_model)
        archive.add_endpoint("serving_default", _named_tf_function(keras_model),
                             input_signature=_input_specs(keras_model, 1))
        archive.write_out(staging, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(staging)
        if precision != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if precision == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif precision == "int8":  # every op int8; float32 in/out at the edges
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # dynamic_int8 (DEFAULT alone): int8 weights, float activations, 4x less weight memory to read
        flatbuffer = converter.convert()
        if precision == "dynamic_int8" and float_full_resolution:
            return float_weights_at_full_resolution(flatbuffer)
        return flatbuffer
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def float_weights_at_full_resolution(flatbuffer: bytes) -> bytes:
    """A dynamic_int8 TFLite model with its convolutions that read the largest feature maps (the
    crop's full resolution) given float32 weights: their int8 values times their scales. The weights
    are the same; those convolutions' inputs are no longer quantised, so the outputs move by a
    little (on the demo's tracker, less than 0.01 mm of error).

    Why: dynamic-range quantisation makes int8 every weight tensor of 1,024 elements or more, and
    the converter has no switch for one layer. At 128x128 the sliced branch's first convolution
    (3x3x8x32, folded) reads 128x128x8 and writes 128x128x32: with int8 weights each call first
    quantises that input, and the first stage took 0.81 ms where float weights take 0.62 ms; the
    depth branch's (288 weights) is float either way (benchmarks/bench_step_parts.py). The later
    stages, at 32x32 and 16x16, are faster in int8 and keep it.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    users = {}  # buffer -> tensors that read it (a shared buffer is left as it is)
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            users[tensor.buffer] = users.get(tensor.buffer, 0) + 1
    changed = False
    for graph in model.subgraphs:
        convs = [op for op in graph.operators if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) == "CONV_2D"]

        def pixels(op) -> int:  # NHWC input
            shape = graph.tensors[op.inputs[0]].shape
            return int(shape[1]) * int(shape[2])
        largest = max((pixels(op) for op in convs), default=0)
        for op in convs:
            weights = graph.tensors[op.inputs[1]]
            if pixels(op) != largest or weights.type != schema.TensorType.INT8 or users[weights.buffer] > 1:
                continue
            quantization = weights.quantization
            values = np.frombuffer(bytes(model.buffers[weights.buffer].data), np.int8).reshape(weights.shape)
            scale_shape = [1] * values.ndim
            scale_shape[quantization.quantizedDimension] = -1
            scales = np.asarray(quantization.scale, np.float32).reshape(scale_shape)
            zero_points = np.asarray(quantization.zeroPoint, np.float32).reshape(scale_shape)
            dequantised = ((values.astype(np.float32) - zero_points) * scales).astype(np.float32)
            model.buffers[weights.buffer].data = np.frombuffer(dequantised.tobytes(), np.uint8)
            weights.type = schema.TensorType.FLOAT32
            weights.quantization = schema.QuantizationParametersT()
            changed = True
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)) if changed else flatbuffer


def export_tflite(bundle, path: str, which: str = "step", precision: str = "float32",
                  samples: Samples | None = None, calibration: Samples | None = None,
                  fc_rank: int | None = None) -> ExportReport:
    """Convert ``spatial``, ``step`` or ``refine`` (batch 1) to ``path`` at float32/float16/int8 and
    verify it. ``fc_rank``: the pose model with low-rank fc layers (``keras_artifact_model``).

    dynamic_int8 stores the weights as int8 and keeps float activations (no calibration; the dense
    and LSTM weights dominate the step's memory traffic). int8 is full-integer (every op int8,
    float32 input/output at the edges) calibrated on ``calibration`` (default: ``samples``), e.g.
    ``sample_clips(bundle, records="train/*.tfrecord")``; parity is checked on ``samples``.
    """
    rank = check_fc_rank(fc_rank) if which != "refine" else None
    keras_model = keras_artifact_model(bundle, which, fc_rank=rank)
    samples = samples or sample_clips(bundle)
    data = convert_tflite(fold_artifact_model(keras_model, which, precision in FLOAT_STEP_PRECISIONS), precision,
                          lambda: representative_inputs(keras_model, calibration or samples, which))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = atomic.temporary_path(path, ".tflite")
    with open(tmp, "wb") as f:
        f.write(data)
    return _verify_and_publish(tmp, path, "tflite", which, precision, keras_model, TFLiteRunner(tmp), samples,
                               batch_one=True, bundle=bundle, fc_rank=rank)


def _verify_and_publish(tmp: str, path: str, fmt: str, which: str, precision: str, keras_model, runner,
                        samples: Samples, batch_one: bool, bundle=None, fc_rank: int | None = None) -> ExportReport:
    """Run the artifact at ``tmp`` (``runner``) and the Keras model on ``samples``; rename it to
    ``path`` if within tolerance, else ``ParityError`` and nothing left. ``batch_one``: the artifact
    has a fixed batch of 1 (TFLite); otherwise every crop/clip goes in one batch (dynamic batch).
    ``fc_rank``: ``keras_model`` has low-rank fc layers; the report also gives its distance from the
    full-rank model of ``bundle``."""
    if which != "step":
        crops, output = _single_frame_inputs(keras_model, samples, which), _output_names(keras_model)[0]
        ref = keras_model.predict_on_batch(crops)
        got = (np.concatenate([runner(crop=c[None])[output] for c in crops]) if batch_one
               else runner(crop=crops)[output])
    else:
        units = keras_model.inputs[1].shape[-1]
        ref = run_step_over_clips(as_step(KerasFunction(keras_model)), units, samples)
        got = run_step_over_clips(as_step(runner), units, samples, clips_at_once=not batch_one)
    rank_error = None if fc_rank is None else _rank_error_mm(bundle, which, keras_model, samples)
    return _check_and_publish(ExportReport(path, fmt, which, precision, *_errors_mm(ref, got, samples.cube),
                                           _size(tmp), fc_rank, rank_error), tmp)


# ----------------------------------------------------------------------------- ONNX

def export_onnx(bundle, path: str, which: str = "step", opset: int = 17,
                samples: Samples | None = None, fc_rank: int | None = None) -> ExportReport:
    """tf2onnx conversion (dynamic batch, static inner shapes) of ``spatial``, ``step`` or
    ``refine``, verified with onnxruntime; ``fc_rank`` as for ``export_tflite``."""
    import tf2onnx
    if opset < 17:
        raise ConfigError(f"opset must be >= 17, got {opset}")
    rank = check_fc_rank(fc_rank) if which != "refine" else None
    keras_model = keras_artifact_model(bundle, which, fc_rank=rank)
    samples = samples or sample_clips(bundle)
    tmp = atomic.temporary_path(path, ".onnx")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tf2onnx.convert.from_function(_named_tf_function(fold_artifact_model(keras_model, which)),
                                  input_signature=_input_specs(keras_model, None), opset=opset, output_path=tmp)
    return _verify_and_publish(tmp, path, "onnx", which, "float32", keras_model, ONNXRunner(tmp), samples,
                               batch_one=False, bundle=bundle, fc_rank=rank)


def export_step(bundle, backend: str = "tflite", precision: str = "float32", path: str | None = None,
                samples: Samples | None = None, which: str = "step", calibration: Samples | None = None,
                fc_rank: int | None = None) -> str:
    """A model the tracker runs on ``backend`` ('tflite' or 'onnx'): the streaming step (``fc_rank``:
    with low-rank fc layers), or (``which='refine'``) the centre refiner, exported and verified once
    into the cache (``runtime.artifact_path``) or to ``path``; returns its path."""
    from keras_cadstn.runtime import artifact_path
    fc_rank = check_fc_rank(fc_rank) if which != "refine" else None
    path = path or artifact_path(bundle, backend, precision, which, fc_rank)
    if not os.path.isfile(path):
        if backend == "tflite":
            export_tflite(bundle, path, which, precision, samples, calibration, fc_rank)
        elif backend == "onnx" and precision == "float32":
            export_onnx(bundle, path, which, samples=samples, fc_rank=fc_rank)
        else:
            raise ConfigError(f"no exported {which} model for backend {backend!r} at {precision!r} "
                              f"(tflite: {PRECISIONS}; onnx: float32)")
    return path


def export_for_tracker(bundle, backend: str = "tflite", precision: str = "float32", directory: str | None = None,
                       samples: Samples | None = None, calibration: Samples | None = None,
                       fc_rank: int | None = None) -> dict:
    """Everything ``HandTracker(bundle, backend, precision, fc_rank=fc_rank, **paths)`` runs, exported
    and verified: {'model_path': the step, 'refiner_path': the centre refiner or None}; into the
    cache, or into ``directory`` when given (an artifact already in either is used as it is). Parity
    is checked on ``samples``, int8 calibrated on ``calibration`` (default: ``samples``). Nothing for
    the Keras backend."""
    from keras_cadstn.runtime import artifact_name
    fc_rank = check_fc_rank(fc_rank)
    if backend == "keras":
        return {"model_path": None, "refiner_path": None}
    samples = samples or sample_clips(bundle)

    def place(which):  # the refiner is never low-rank
        rank = fc_rank if which == "step" else None
        return None if directory is None else os.path.join(directory, artifact_name(backend, precision, which, rank))
    return {"model_path": export_step(bundle, backend, precision, place("step"), samples, "step", calibration,
                                      fc_rank),
            "refiner_path": export_step(bundle, backend, precision, place("refine"), samples, "refine", calibration)
            if bundle.refiner is not None else None}


# ----------------------------------------------------------------------------- everything

def export_all(bundle, out_dir: str, records: str | None = None, precisions=PRECISIONS, onnx: bool = True,
               saved_model: bool = True, progress: bool = True, num_clips: int = 20,
               calibration_records: str | None = None, fc_rank: int | None = None) -> list:
    """Every artifact of a bundle under ``out_dir``; returns (reports, refusals), printed as they come.
    Parity checks use ``num_clips`` clips of T crops (of ``records`` if given); int8 calibration
    uses as many clips of ``calibration_records`` (e.g. the train split; default: the parity clips).
    ``fc_rank``: the TFLite/ONNX pose models (spatial, step) with low-rank fc layers, named
    ``..._rank<r>``; the SavedModel and the centre refiner stay as trained."""
    from keras_cadstn.runtime import artifact_name
    fc_rank = check_fc_rank(fc_rank)
    if fc_rank is not None:
        bundle.low_rank_step(fc_rank)  # no such step: fail before anything is written
    samples = sample_clips(bundle, num_clips=num_clips, records=records)
    calibration = sample_clips(bundle, num_clips=num_clips, records=calibration_records) if calibration_records else None
    reports = []

    def done(r):
        reports.append(r)
        if progress:
            print(r.line(), flush=True)

    def attempt(make):
        try:
            done(make())
        except ParityError as e:  # refused artifacts are reported, the others still exported
            refused.append(str(e))
            if progress:
                print(f"REFUSED {e}", flush=True)

    refused = []
    if saved_model:
        attempt(lambda: export_saved_model(bundle, os.path.join(out_dir, "saved_model"), samples=samples))
    for which in MODELS:
        if which == "refine" and bundle.refiner is None:
            continue
        rank = None if which == "refine" else fc_rank
        for precision in precisions:
            attempt(lambda: export_tflite(bundle, os.path.join(out_dir, artifact_name("tflite", precision, which, rank)),
                                          which, precision, samples, calibration, rank))
        if onnx:
            attempt(lambda: export_onnx(bundle, os.path.join(out_dir, artifact_name("onnx", "float32", which, rank)),
                                        which, samples=samples, fc_rank=rank))
    return reports, refused
