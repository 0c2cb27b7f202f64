"""ONNX models (tf2onnx), verified against Keras with onnxruntime."""
from __future__ import annotations

import os

from keras_cadstn import fileio
from keras_cadstn.errors import ConfigError
from keras_cadstn.export.artifacts import ExportReport, fold_artifact_model, input_specs, keras_artifact_model, named_tf_function, verify_and_publish
from keras_cadstn.tracking.runtime import ONNXRunner, Samples, check_fc_rank, sample_clips


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
    tmp = fileio.temporary_path(path, ".onnx")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tf2onnx.convert.from_function(named_tf_function(fold_artifact_model(keras_model, which)),
                                  input_signature=input_specs(keras_model, None), opset=opset, output_path=tmp)
    return verify_and_publish(tmp, path, "onnx", which, "float32", keras_model, ONNXRunner(tmp), samples,
                               batch_one=False, bundle=bundle, fc_rank=rank)
