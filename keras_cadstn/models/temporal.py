"""Temporal Network: per-frame CNN feature -> LSTM -> concat(h_t, phi_t) -> fc(3K), and its
streaming step (one frame plus LSTM state in, joints plus new state out) sharing the same weights."""
from __future__ import annotations

import keras
from keras import layers

from keras_cadstn.models.blocks import crop_input, frame_encoder
from keras_cadstn.models.config import CADSTNConfig


def build_temporal_network(config: CADSTNConfig = CADSTNConfig(), **overrides) -> keras.Model:
    """Clips (B, T, M, M, 1) -> joints (B, T, 3K). The LSTM state starts at zero for each clip."""
    config = config.replace(**overrides)
    clips = crop_input(config, name="clip", time=True)
    phi = layers.TimeDistributed(frame_encoder(config), name="frame_encoder")(clips)
    h = layers.LSTM(config.lstm_units, return_sequences=True, name="lstm")(phi)
    h = layers.Dropout(config.lstm_dropout, name="lstm_dropout")(h)
    x = layers.Concatenate(name="concat")([h, phi])
    out = layers.Dense(config.num_outputs, name="joints")(x)  # Dense acts on the last axis: per frame
    return keras.Model(clips, out, name="temporal_network")


def build_temporal_stream(temporal: keras.Model) -> keras.Model:
    """One step of ``temporal``: [crop (B, M, M, 1), h (B, U), c (B, U)] -> [joints, h', c'].

    Uses the very layers of ``temporal`` (the LSTM's cell, the encoder, the last fc), so feeding a
    clip frame by frame from zero state gives the windowed model's outputs, at the cost of one frame.
    """
    encoder = temporal.get_layer("frame_encoder").layer
    lstm, head = temporal.get_layer("lstm"), temporal.get_layer("joints")
    units = lstm.units
    crop = keras.Input(tuple(encoder.input.shape[1:]), name="crop")
    h, c = keras.Input((units,), name="lstm_h"), keras.Input((units,), name="lstm_c")
    phi = encoder(crop)
    out, (h2, c2) = lstm.cell(phi, [h, c])
    joints = head(layers.Concatenate(name="concat")([out, phi]))
    return keras.Model([crop, h, c], [joints, h2, c2], name="temporal_stream")


def init_encoder_from_baseline(temporal: keras.Model, baseline: keras.Model, freeze: bool = True) -> None:
    """Copy the trained Baseline's conv stages and first fc into the temporal frame encoder and
    (default) freeze them, as the authors' released code does (docs/architecture.md, ours)."""
    encoder = temporal.get_layer("frame_encoder").layer
    for layer in encoder.layers:
        if layer.weights:
            layer.set_weights(baseline.get_layer(layer.name).get_weights())
    encoder.trainable = not freeze
