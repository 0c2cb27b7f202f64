"""The CADSTN networks as Keras 3 functional models (keras.layers / keras.ops only)."""
from keras_cadstn.models.baseline import build_baseline_network, build_sliced3d_network
from keras_cadstn.models.fusion import (build_cadstn, build_fusion_network, build_gate_network, build_prediction_gate,
                                        copy_matching_weights, gate_weights_model, get_submodel)
from keras_cadstn.models.layers import FrozenSubmodel, GatedFusion, SliceVolume, mean_joint_distance

# imported here so that its layer is registered before any bundle's low-rank step is loaded
from keras_cadstn.models.low_rank import LowRankDense
from keras_cadstn.models.refiner import build_centre_refiner, build_hand_detector
from keras_cadstn.models.spatial import LOSS_WEIGHTS, build_spatial_network, fold_sliced_convolutions, spatial_inference_model
from keras_cadstn.models.temporal import build_temporal_network, build_temporal_stream, init_encoder_from_baseline, uses_centre_motion

__all__ = ["build_baseline_network", "build_sliced3d_network", "build_spatial_network",
           "spatial_inference_model", "fold_sliced_convolutions", "build_temporal_network", "build_temporal_stream",
           "uses_centre_motion", "init_encoder_from_baseline", "build_fusion_network", "build_gate_network",
           "build_prediction_gate", "gate_weights_model", "build_cadstn",
           "get_submodel", "copy_matching_weights", "build_centre_refiner", "build_hand_detector",
           "FrozenSubmodel", "GatedFusion", "LowRankDense", "SliceVolume", "mean_joint_distance", "LOSS_WEIGHTS"]
