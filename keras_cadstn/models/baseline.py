"""Single-branch networks of the ablation: Baseline Regression (depth) and Sliced 3D Input (volume)."""
from __future__ import annotations

import keras

from keras_cadstn.config import CADSTNConfig
from keras_cadstn.models.blocks import regression_network


def build_baseline_network(config: CADSTNConfig = CADSTNConfig(), **overrides) -> keras.Model:
    """Depth crop (B, M, M, 1) -> normalised joints (B, 3K)."""
    return regression_network(config.replace(**overrides), "baseline_network")


def build_sliced3d_network(config: CADSTNConfig = CADSTNConfig(), **overrides) -> keras.Model:
    """Depth crop (B, M, M, 1) -> sliced volume inside the model -> joints (B, 3K)."""
    return regression_network(config.replace(**overrides), "sliced3d_network", sliced=True)
