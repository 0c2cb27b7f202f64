"""Building blocks shared by the networks: the convolutional trunks and the regression head."""
from __future__ import annotations

import keras
from keras import layers

from keras_cadstn.config import CADSTNConfig
from keras_cadstn.models.layers import SliceVolume


def conv_trunk(x, config: CADSTNConfig, prefix: str, sliced: bool = False):
    """conv/pool stages -> flatten. ``sliced``: each stage is conv3x3 (linear) then conv1x1 + ReLU,
    as the Sliced 3D Input Network; otherwise conv3x3 + ReLU."""
    for i, (n, pool) in enumerate(zip(config.filters, config.pools), 1):
        if sliced:
            x = layers.Conv2D(n, 3, padding="same", name=f"{prefix}conv{i}")(x)
            x = layers.Conv2D(n, 1, activation="relu", name=f"{prefix}conv{i}_1x1")(x)
        else:
            x = layers.Conv2D(n, 3, padding="same", activation="relu", name=f"{prefix}conv{i}")(x)
        x = layers.MaxPooling2D(pool, name=f"{prefix}pool{i}")(x)
    return layers.Flatten(name=f"{prefix}flatten")(x)


def dense_block(x, config: CADSTNConfig, name: str):
    x = layers.Dense(config.fc_units, activation="relu", name=name)(x)
    return layers.Dropout(config.dropout, name=f"{name}_dropout")(x)


def crop_input(config: CADSTNConfig, name: str = "crop", time: bool = False):
    shape = ((config.seq_len,) if time else ()) + config.crop_shape
    return keras.Input(shape, name=name)


def motion_input(config: CADSTNConfig, time: bool = True):
    """The crop centre's frame-to-frame motion, cube-normalised: (T, 3), or (3,) for one step."""
    return keras.Input(((config.seq_len,) if time else ()) + (3,), name="centre_motion")


def frame_encoder(config: CADSTNConfig, name: str = "frame_encoder") -> keras.Model:
    """The Baseline trunk up to its first fc: conv stages -> fc(1024) -> ReLU -> dropout = phi_t."""
    inp = crop_input(config)
    x = conv_trunk(inp, config, prefix="")
    return keras.Model(inp, dense_block(x, config, "fc1"), name=name)


def regression_network(config: CADSTNConfig, name: str, sliced: bool = False,
                       activation: str | None = None, last_initializer: str = "glorot_uniform") -> keras.Model:
    """Baseline-shaped single-branch regressor: trunk -> fc -> drop -> fc -> drop -> fc(3K);
    ``last_initializer``: the kernel initializer of the last fc."""
    inp = crop_input(config)
    x = SliceVolume(config.num_slices, name="slice_volume")(inp) if sliced else inp
    x = conv_trunk(x, config, prefix="", sliced=sliced)
    x = dense_block(x, config, "fc1")
    x = dense_block(x, config, "fc2")
    out = layers.Dense(config.num_outputs, activation=activation, kernel_initializer=last_initializer,
                       name="joints")(x)
    return keras.Model(inp, out, name=name)
