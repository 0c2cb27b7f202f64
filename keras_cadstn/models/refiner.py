"""Hand-centre refinement network (DeepPrior++'s idea, written our way; not part of CADSTN).

A small CNN sees a coarse crop cut around an estimated hand centre and regresses the offset from
that centre to the hand's reference joint, in cube-normalised units ((xyz_ref - xyz_centre) /
(cube / 2)). The tracker applies it ``iterations`` times to the label-free localiser's centre, then
cuts the pose crop around the result exactly as training cut it around the labelled joint.
"""
from __future__ import annotations

import keras
from keras import layers

from keras_cadstn.models.config import RefinerConfig


def build_centre_refiner(config: RefinerConfig = RefinerConfig()) -> keras.Model:
    """crop (B, S, S, 1), normalised as the pose crops -> offset (B, 3) to the reference joint."""
    s = config.image_size
    inp = keras.Input((s, s, 1), name="crop")
    x = inp
    for i, n in enumerate(config.filters, 1):
        x = layers.Conv2D(n, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(config.fc_units, activation="relu", name="fc1")(x)
    out = layers.Dense(3, name="offset")(x)
    return keras.Model(inp, out, name="centre_refiner")
