"""Small crop networks that place the hand (DeepPrior++'s idea, written our way; not part of CADSTN).

The centre refiner sees a coarse crop cut around an estimated hand centre and regresses the offset
from that centre to the hand's reference joint, in cube-normalised units ((xyz_ref - xyz_centre) /
(cube / 2)). The tracker applies it ``iterations`` times to the label-free localiser's centre (and
``tracked_iterations`` times to the last frame's refined joint), then cuts the pose crop around the
result exactly as training cut it around the labelled joint.

The hand detector is the same network with a second output: the logit of "a hand is at this crop's
centre" (``keras_cadstn.tracking.detector``).
"""
from __future__ import annotations

import keras
from keras import layers

from keras_cadstn.config import DetectorConfig, RefinerConfig


def _crop_features(config):
    """(input, features): conv 3x3 + max-pool per entry of ``config.filters``, then fc."""
    s = config.image_size
    inp = keras.Input((s, s, 1), name="crop")
    x = inp
    for i, n in enumerate(config.filters, 1):
        x = layers.Conv2D(n, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    return inp, layers.Dense(config.fc_units, activation="relu", name="fc1")(x)


def build_centre_refiner(config: RefinerConfig = RefinerConfig()) -> keras.Model:
    """crop (B, S, S, 1), normalised as the pose crops -> offset (B, 3) to the reference joint."""
    inp, x = _crop_features(config)
    return keras.Model(inp, layers.Dense(3, name="offset")(x), name="centre_refiner")


def build_hand_detector(config: DetectorConfig = DetectorConfig()) -> keras.Model:
    """crop (B, S, S, 1) -> {"offset": (B, 3) to the palm, cube-normalised, "hand": (B, 1) logit}."""
    inp, x = _crop_features(config)
    return keras.Model(inp, {"offset": layers.Dense(3, name="offset")(x), "hand": layers.Dense(1, name="hand")(x)},
                       name="hand_detector")
