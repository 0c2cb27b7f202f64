"""keras_cadstn: CADSTN 3D hand pose estimation from depth images with Keras 3.

Model builders are imported lazily so ``import keras_cadstn`` (e.g. for the data tools) does not
load Keras until a model is needed.
"""
__version__ = "0.1.0"

_LAZY = {
    "build_baseline_network": "keras_cadstn.models", "build_sliced3d_network": "keras_cadstn.models",
    "build_spatial_network": "keras_cadstn.models", "build_temporal_network": "keras_cadstn.models",
    "build_temporal_stream": "keras_cadstn.models", "build_fusion_network": "keras_cadstn.models",
    "build_cadstn": "keras_cadstn.models", "get_submodel": "keras_cadstn.models",
    "spatial_inference_model": "keras_cadstn.models", "CADSTNConfig": "keras_cadstn.models",
    "make_dataset": "keras_cadstn.data", "load_bundle": "keras_cadstn.bundle",
    "save_bundle": "keras_cadstn.bundle", "HandTracker": "keras_cadstn.tracking",
    "HandLocaliser": "keras_cadstn.tracking", "track_split": "keras_cadstn.tracking",
    "Camera": "keras_cadstn.camera", "DatasetSpec": "keras_cadstn.data", "load_split": "keras_cadstn.data",
    "InputConfig": "keras_cadstn.data.pipeline", "convert_split": "keras_cadstn.data.tfrecord",
    "write_synthetic_nyu": "keras_cadstn.data.synthetic",
    "TrainConfig": "keras_cadstn.train", "train_cadstn": "keras_cadstn.train",
    "export_all": "keras_cadstn.export", "export_step": "keras_cadstn.export",
    "export_for_tracker": "keras_cadstn.export", "train_refiner": "keras_cadstn.refine",
    "export_saved_model": "keras_cadstn.export",
    "mean_error": "keras_cadstn.evaluate", "per_joint_error": "keras_cadstn.evaluate",
    "success_rate": "keras_cadstn.evaluate", "load_results": "keras_cadstn.evaluate",
    "save_results": "keras_cadstn.evaluate", "comparison_table": "keras_cadstn.evaluate",
    "plot_comparison": "keras_cadstn.evaluate", "predict_split": "keras_cadstn.evaluate",
    "CadstnError": "keras_cadstn.errors", "DataError": "keras_cadstn.errors", "ConfigError": "keras_cadstn.errors",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keras_cadstn' has no attribute {name!r}")


__all__ = sorted(_LAZY) + ["__version__"]
