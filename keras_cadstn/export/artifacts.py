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
- Where the bundle has a centre refiner (``keras_cadstn.tracking.refiner``): the same TFLite precisions and
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

import numpy as np
import tensorflow as tf

from keras_cadstn import fileio
from keras_cadstn.config import PRECISIONS
from keras_cadstn.errors import ConfigError, ParityError
from keras_cadstn.models import fold_sliced_convolutions
from keras_cadstn.models.streaming import build_streaming_cadstn, streaming_parts
from keras_cadstn.tracking.runtime import KerasFunction, Samples, as_step, check_fc_rank, run_step_over_clips

# Largest allowed |artifact - Keras| in mm: float32 its max (0.01 mm: the same function); reduced
# precisions are reported and only guarded against gross breakage, by their mean. Their max is one
# outlier crop's: the demo bundle's full-integer int8 step has a mean of 0.9 mm and a max of 44 mm
# and tracks as well as float32, while a broken sliced volume (int8 comparing with +1 itself) gives 4.6 mm.
TOLERANCE_MM = dict(zip(PRECISIONS, (0.01, 0.5, 1.0, 2.5)))  # float32, float16, dynamic_int8, int8

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


def errors_mm(reference_norm, artifact_norm, cube) -> tuple:
    """Max and mean |difference| in mm of two cube-normalised (..., 3K) predictions."""
    a = np.asarray(reference_norm, np.float64)
    b = np.asarray(artifact_norm, np.float64).reshape(a.shape)
    half = np.asarray(cube, np.float64).reshape(-1, 3)[0] / 2.0
    diff = np.abs(a - b).reshape(a.shape[:-1] + (-1, 3)) * half
    return float(diff.max()), float(diff.mean())


def check_and_publish(report: ExportReport, tmp_path: str) -> ExportReport:
    """Rename the verified artifact into place; past the tolerance remove it AND any older artifact
    of the same name (a refused export must not leave a stale file that looks like its result)."""
    limit = TOLERANCE_MM[report.precision]
    statistic = "max" if report.precision == "float32" else "mean"
    measured = report.max_abs_mm if statistic == "max" else report.mean_abs_mm
    if not np.isfinite(report.max_abs_mm) or measured > limit:
        fileio.remove(tmp_path)
        fileio.remove(report.path)
        raise ParityError(f"{report.fmt} {report.model} {report.precision}: max |error| {report.max_abs_mm:.4f} mm, "
                          f"mean {report.mean_abs_mm:.4f} mm against the Keras model: the {statistic} exceeds "
                          f"{limit} mm; nothing written")
    fileio.publish(tmp_path, report.path)
    return dataclasses.replace(report, size_bytes=artifact_size(report.path))


def artifact_size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


# ----------------------------------------------------------------------------- SavedModel


# ----------------------------------------------------------------------------- TFLite

def input_specs(keras_model, batch):
    return [tf.TensorSpec((batch,) + tuple(x.shape[1:]), tf.float32, name=x.name.split(":")[0])
            for x in keras_model.inputs]


def _output_names(keras_model) -> list:
    if keras_model.name == "centre_refiner":
        return ["offset"]
    return ["joints", "lstm_h_out", "lstm_c_out"][:len(keras_model.outputs)]


def named_tf_function(keras_model):
    """The Keras model as a tf.function with named outputs (inputs are named by their specs)."""
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
        return errors_mm(full.predict_on_batch(samples.crops), low_rank_keras.predict_on_batch(samples.crops),
                          samples.cube)[1]
    units = full.inputs[1].shape[-1]
    return errors_mm(run_step_over_clips(as_step(KerasFunction(full)), units, samples),
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


def verify_and_publish(tmp: str, path: str, fmt: str, which: str, precision: str, keras_model, runner,
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
    return check_and_publish(ExportReport(path, fmt, which, precision, *errors_mm(ref, got, samples.cube),
                                           artifact_size(tmp), fc_rank, rank_error), tmp)


# ----------------------------------------------------------------------------- ONNX


# ----------------------------------------------------------------------------- everything
