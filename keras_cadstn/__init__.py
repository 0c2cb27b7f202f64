"""keras_cadstn: CADSTN 3D hand pose estimation from depth images with Keras 3.

Every public name is listed below and importable from here (``from keras_cadstn import HandTracker``).
They load on first use, so ``import keras_cadstn`` stays light (no TensorFlow until a name needs it);
editors and type checkers read the same names from the ``TYPE_CHECKING`` block.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_API = {
    "keras_cadstn.config": ("CADSTNConfig", "RefinerConfig", "DetectorConfig", "TrainConfig", "InputConfig", "SynthConfig",
        "DemoConfig", "paper", "demo", "benchmark", "cache_dir",),
    "keras_cadstn.errors": ("CadstnError", "DataError", "ConfigError",),
    "keras_cadstn.camera": ("Camera",),
    "keras_cadstn.data.frames": ("DatasetSpec",),
    "keras_cadstn.data.splits": ("load_split",),
    "keras_cadstn.data.pipeline": ("make_dataset",),
    "keras_cadstn.data.tfrecord": ("convert_split",),
    "keras_cadstn.data.synthetic": ("write_synthetic_nyu",),
    "keras_cadstn.data.results": ("load_results", "save_results",),
    "keras_cadstn.data.metrics": ("mean_error", "per_joint_error", "success_rate", "comparison_table", "plot_comparison",),
    "keras_cadstn.models": ("build_baseline_network", "build_sliced3d_network", "build_spatial_network",
        "build_temporal_network", "build_temporal_stream", "build_fusion_network", "build_cadstn",
        "get_submodel", "spatial_inference_model",),
    "keras_cadstn.models.bundle": ("Bundle", "load_bundle", "save_bundle",),
    "keras_cadstn.tracking.localiser": ("HandLocaliser",),
    "keras_cadstn.tracking.tracker": ("HandTracker",),
    "keras_cadstn.tracking.evaluate": ("track_split",),
    "keras_cadstn.tracking.stream": ("track_stream",),
    "keras_cadstn.training.stages": ("train_cadstn",),
    "keras_cadstn.training.refiner": ("train_refiner",),
    "keras_cadstn.training.evaluate": ("predict_split",),
    "keras_cadstn.export.saved_model": ("export_saved_model",),
    "keras_cadstn.export.tracker": ("export_all", "export_step", "export_for_tracker",),
    "keras_cadstn.presets": ("load_preset", "list_presets", "preset_path",),
    "keras_cadstn.demo": ("run_demo",),
}
_WHERE = {name: module for module, names in _API.items() for name in names}

if TYPE_CHECKING:  # the same names, for editors and type checkers
    from keras_cadstn.camera import Camera
    from keras_cadstn.config import (CADSTNConfig, DemoConfig, DetectorConfig, InputConfig, RefinerConfig, SynthConfig, TrainConfig,
        benchmark, cache_dir, demo, paper)
    from keras_cadstn.data.frames import DatasetSpec
    from keras_cadstn.data.metrics import comparison_table, mean_error, per_joint_error, plot_comparison, success_rate
    from keras_cadstn.data.pipeline import make_dataset
    from keras_cadstn.data.results import load_results, save_results
    from keras_cadstn.data.splits import load_split
    from keras_cadstn.data.synthetic import write_synthetic_nyu
    from keras_cadstn.data.tfrecord import convert_split
    from keras_cadstn.demo import run_demo
    from keras_cadstn.errors import CadstnError, ConfigError, DataError
    from keras_cadstn.export.saved_model import export_saved_model
    from keras_cadstn.export.tracker import export_all, export_for_tracker, export_step
    from keras_cadstn.models import (build_baseline_network, build_cadstn, build_fusion_network, build_sliced3d_network,
        build_spatial_network, build_temporal_network, build_temporal_stream, get_submodel,
        spatial_inference_model)
    from keras_cadstn.models.bundle import Bundle, load_bundle, save_bundle
    from keras_cadstn.presets import list_presets, load_preset, preset_path
    from keras_cadstn.tracking.evaluate import track_split
    from keras_cadstn.tracking.localiser import HandLocaliser
    from keras_cadstn.tracking.stream import track_stream
    from keras_cadstn.tracking.tracker import HandTracker
    from keras_cadstn.training.evaluate import predict_split
    from keras_cadstn.training.refiner import train_refiner
    from keras_cadstn.training.stages import train_cadstn


def __getattr__(name):
    if name == "presets":  # the module itself: keras_cadstn.presets.list_presets(), .DEFAULT
        return importlib.import_module("keras_cadstn.presets")
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_cadstn' has no attribute {name!r}")


def __dir__():
    return __all__


__all__ = sorted(_WHERE) + ["presets", "__version__"]
