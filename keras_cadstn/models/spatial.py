"""Spatial Network: Deeply-Fusion of the depth branch and the sliced 3D branch (docs/architecture.md)."""
from __future__ import annotations

import keras
import numpy as np
from keras import layers

from keras_cadstn.config import CADSTNConfig
from keras_cadstn.models.blocks import conv_trunk, crop_input
from keras_cadstn.models.layers import SliceVolume

OUTPUTS = ("joints", "aux_depth", "aux_3d")
# Three L2 losses of weight 1 each (the paper; the authors' Caffe nets likewise).
LOSS_WEIGHTS = {"joints": 1.0, "aux_depth": 1.0, "aux_3d": 1.0}


def build_spatial_network(config: CADSTNConfig = CADSTNConfig(), **overrides) -> keras.Model:
    """Training model: crop (B, M, M, 1) -> {"joints", "aux_depth", "aux_3d"} each (B, 3K).

    phi0 = mean(phi_depth, phi_3D); phi_m = mean(H_m^depth(phi_{m-1}), H_m^3D(phi_{m-1})), m = 1, 2.
    The auxiliary paths run each branch's own feature through the SAME H layers (shared weights);
    only their final fc(3K) is their own. Fusion is the element-wise mean of the paper's equation
    (2); the authors' code sums, which only doubles the scale of what follows.
    """
    config = config.replace(**overrides)
    crop = crop_input(config)
    volume = SliceVolume(config.num_slices, name="slice_volume")(crop)
    phi_depth = conv_trunk(crop, config, prefix="depth_")
    phi_3d = conv_trunk(volume, config, prefix="vol_", sliced=True)

    h = {f"{b}{m}": layers.Dense(config.fc_units, activation="relu", name=f"h{m}_{b}")
         for m in (1, 2) for b in ("depth", "3d")}
    drop = {k: layers.Dropout(config.dropout, name=f"{v.name}_dropout") for k, v in h.items()}

    def path(x, branch):  # H1 then H2 of one branch, as on the auxiliary paths
        x = drop[f"{branch}1"](h[f"{branch}1"](x))
        return drop[f"{branch}2"](h[f"{branch}2"](x))

    phi = layers.Average(name="fuse0")([phi_depth, phi_3d])
    for m in (1, 2):
        phi = layers.Average(name=f"fuse{m}")([drop[f"depth{m}"](h[f"depth{m}"](phi)),
                                               drop[f"3d{m}"](h[f"3d{m}"](phi))])
    outputs = {
        "joints": layers.Dense(config.num_outputs, name="joints")(phi),
        "aux_depth": layers.Dense(config.num_outputs, name="aux_depth")(path(phi_depth, "depth")),
        "aux_3d": layers.Dense(config.num_outputs, name="aux_3d")(path(phi_3d, "3d")),
    }
    return keras.Model(crop, outputs, name="spatial_network")


def spatial_inference_model(spatial: keras.Model) -> keras.Model:
    """The main path only, sharing the training model's layers (no copy): crop -> joints."""
    return keras.Model(spatial.input, spatial.get_layer("joints").output, name="spatial_inference")


def fold_sliced_convolutions(spatial: keras.Model, float_steps: bool = False) -> keras.Model:
    """The same function with fewer multiply-adds, for deployment: in the sliced 3D branch each
    conv3x3 (linear) followed by conv1x1 + ReLU becomes one conv3x3 + ReLU with W = W3 . W1 and
    b = b3 . W1 + b1 (exact: the 3x3 pads the volume, not the intermediate; equal up to float
    rounding). At 128x128 the 1x1 convolutions are 25M of the branch's 100M multiply-adds; the int8
    streaming step gets 0.15 ms faster. ``float_steps``: the slicing's comparisons as float steps
    (``SliceVolume(float_steps=True)``; float32 graphs only). Every other layer is shared with
    ``spatial``, not copied.
    """
    def clone(layer):
        if isinstance(layer, SliceVolume):
            return SliceVolume(layer.num_slices, float_steps=float_steps, name=layer.name) if float_steps else layer
        if layer.name.startswith("vol_conv") and not layer.name.endswith("_1x1"):
            w3, b3 = layer.get_weights()
            w1, b1 = spatial.get_layer(f"{layer.name}_1x1").get_weights()
            folded = layers.Conv2D(w1.shape[-1], layer.kernel_size, padding=layer.padding, name=f"{layer.name}_folded")
            folded.build((None, None, None, w3.shape[2]))
            folded.set_weights([np.einsum("hwci,ij->hwcj", w3, w1[0, 0]), b3 @ w1[0, 0] + b1])
            return folded
        if layer.name.startswith("vol_conv"):  # the 1x1: only its activation is left
            return layers.Activation(layer.activation, name=f"{layer.name}_activation")
        return layer

    return keras.models.clone_model(spatial, clone_function=clone)
