"""TFLite models of the streaming step, the spatial network and the centre refiner: conversion at each
precision, int8 calibration, and the float weights put back where int8 ones cost time."""
from __future__ import annotations

import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from keras_cadstn import fileio
from keras_cadstn.errors import ConfigError
from keras_cadstn.export.artifacts import (
    FLOAT_STEP_PRECISIONS,
    PRECISIONS,
    ExportReport,
    fold_artifact_model,
    input_specs,
    keras_artifact_model,
    named_tf_function,
    representative_inputs,
    verify_and_publish,
)
from keras_cadstn.tracking.runtime import Samples, TFLiteRunner, check_fc_rank, sample_clips


def convert_tflite(keras_model, precision: str = "float32", representative=None,
                   float_full_resolution: bool = True) -> bytes:
    """A Keras model as a TFLite flatbuffer (batch 1, inputs/outputs named as in the model).

    ``representative``: for int8, a callable returning an iterator of input lists/dicts (the
    calibration data). ``float_full_resolution`` (dynamic_int8): the convolutions at the largest
    feature maps with float32 weights (``float_weights_at_full_resolution``); False: as converted.
    Goes through a SavedModel: ``from_concrete_functions`` on a Keras 3 model gave garbage weights
    (NaN out of the first conv) in TF 2.21; this route matches Keras to ~1e-7.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and representative is None:
        raise ConfigError("int8 needs representative (calibration) inputs")
    staging = tempfile.mkdtemp(prefix="cadstn_tflite_")
    try:
        archive = keras.export.ExportArchive()
        archive.track(keras_model)
        archive.add_endpoint("serving_default", named_tf_function(keras_model),
                             input_signature=input_specs(keras_model, 1))
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
    quantises that input (the numbers: docs/decisions.md); the depth branch's (288 weights) is
    float either way. The later stages, at 32x32 and 16x16, are faster in int8 and keep it.
    """
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
    tmp = fileio.temporary_path(path, ".tflite")
    with open(tmp, "wb") as f:
        f.write(data)
    return verify_and_publish(tmp, path, "tflite", which, precision, keras_model, TFLiteRunner(tmp), samples,
                               batch_one=True, bundle=bundle, fc_rank=rank)
