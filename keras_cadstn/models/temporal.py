"""Temporal Network: per-frame CNN feature -> LSTM -> concat(h_t, phi_t) -> fc(3K), and its
streaming step (one frame plus LSTM state in, joints plus new state out) sharing the same weights."""
from __future__ import annotations

import keras
from keras import layers

from keras_cadstn.config import CADSTNConfig
from keras_cadstn.models.blocks import crop_input, frame_encoder, motion_input

# ours: the centre motion enters in units of a tenth of the half cube (15 mm for NYU's 300 mm cube)
# rather than the joints' units, where a frame's typical motion (a few mm, ~0.02) would be too small
# beside the encoder's activations for the LSTM to notice it early in training
MOTION_SCALE = 10.0


def build_temporal_network(config: CADSTNConfig = CADSTNConfig(), **overrides) -> keras.Model:
    """Clips (B, T, M, M, 1) -> joints (B, T, 3K). The LSTM state starts at zero for each clip.

    With ``config.centre_motion`` the inputs are ``[clip, centre_motion (B, T, 3)]`` and the motion
    joins phi_t at the LSTM's input and at the last fc: a hand that stays put while the crop centre
    moves by m is at j_t-1 - m in the new crop, which the last fc can compute from h_t and m_t.
    """
    config = config.replace(**overrides)
    clips = crop_input(config, name="clip", time=True)
    phi = layers.TimeDistributed(frame_encoder(config), name="frame_encoder")(clips)
    inputs, motion, lstm_in = clips, [], phi
    if config.centre_motion:
        raw = motion_input(config)
        inputs, motion = [clips, raw], [layers.Rescaling(MOTION_SCALE, name="motion_scale")(raw)]
        lstm_in = layers.Concatenate(name="lstm_input")([phi] + motion)
    h = layers.LSTM(config.lstm_units, return_sequences=True, name="lstm")(lstm_in)
    h = layers.Dropout(config.lstm_dropout, name="lstm_dropout")(h)
    x = layers.Concatenate(name="concat")([h, phi] + motion)
    out = layers.Dense(config.num_outputs, name="joints")(x)  # Dense acts on the last axis: per frame
    return keras.Model(inputs, out, name="temporal_network")


def uses_centre_motion(model: keras.Model) -> bool:
    """Whether a temporal network, its streaming step or a model built on them reads the centre
    motion (an input named ``centre_motion``)."""
    return any(t.name.split(":")[0] == "centre_motion" for t in model.inputs)


def build_temporal_stream(temporal: keras.Model) -> keras.Model:
    """One step of ``temporal``: [crop (B, M, M, 1), h (B, U), c (B, U)] -> [joints, h', c'];
    a network with centre motion takes a fourth input, ``centre_motion`` (B, 3).

    Uses the very layers of ``temporal`` (the LSTM's cell, the encoder, the last fc), so feeding a
    clip frame by frame from zero state gives the windowed model's outputs, at the cost of one frame.
    """
    encoder = temporal.get_layer("frame_encoder").layer
    lstm, head = temporal.get_layer("lstm"), temporal.get_layer("joints")
    units = lstm.units
    crop = keras.Input(tuple(encoder.input.shape[1:]), name="crop")
    h, c = keras.Input((units,), name="lstm_h"), keras.Input((units,), name="lstm_c")
    inputs, motion = [crop, h, c], []
    phi = encoder(crop)
    lstm_in = phi
    if uses_centre_motion(temporal):
        raw = keras.Input((3,), name="centre_motion")
        inputs, motion = inputs + [raw], [temporal.get_layer("motion_scale")(raw)]
        lstm_in = layers.Concatenate(name="lstm_input")([phi] + motion)
    out, (h2, c2) = lstm.cell(lstm_in, [h, c])
    joints = head(layers.Concatenate(name="concat")([out, phi] + motion))
    return keras.Model(inputs, [joints, h2, c2], name="temporal_stream")


def init_encoder_from_baseline(temporal: keras.Model, baseline: keras.Model, freeze: bool = True) -> None:
    """Copy the trained Baseline's conv stages and first fc into the temporal frame encoder and
    (default) freeze them, as the authors' released code does (docs/architecture.md, ours)."""
    encoder = temporal.get_layer("frame_encoder").layer
    for layer in encoder.layers:
        if layer.weights:
            layer.set_weights(baseline.get_layer(layer.name).get_weights())
    encoder.trainable = not freeze
