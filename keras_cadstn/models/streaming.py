"""CADSTN one frame at a time: the spatial network, the temporal network's streaming step and the
gate on the same crop, fused. Feeding a clip frame by frame from zero LSTM state reproduces the
clip model; carrying the state across frames is what the real-time tracker does."""
from __future__ import annotations

import keras

from keras_cadstn.models.fusion import reads_predictions
from keras_cadstn.models.layers import GatedFusion


def build_streaming_cadstn(spatial: keras.Model, temporal_step: keras.Model, gate: keras.Model) -> keras.Model:
    """[crop (B, M, M, 1), lstm_h (B, U), lstm_c (B, U)] -> [joints (B, 3K), lstm_h', lstm_c'];
    with a temporal network that reads the centre motion, a fourth input ``centre_motion`` (B, 3).

    The sub-models' layers are shared, not copied.
    """
    inputs = [keras.Input(tuple(t.shape[1:]), name=t.name.split(":")[0]) for t in temporal_step.inputs]
    crop, h, c = inputs[:3]
    j_temp, h2, c2 = temporal_step(inputs)
    j_spa = spatial(crop)
    if reads_predictions(gate):  # a gate over clips of any length, here one frame
        def one_frame(x, name):
            return keras.layers.Reshape((1, x.shape[-1]), name=name)(x)
        w1 = gate([one_frame(j_spa, "spatial_frame"), one_frame(j_temp, "temporal_frame")]
                  + [one_frame(m, "motion_frame") for m in inputs[3:]])
        w1 = keras.layers.Reshape((w1.shape[-1],), name="gate_frame")(w1)
    else:
        w1 = gate(crop)
    joints = GatedFusion(name="joints")([w1, j_temp, j_spa])
    # Identity-named outputs so exported graphs (TFLite, ONNX) carry readable names.
    h2 = keras.layers.Identity(name="lstm_h_out")(h2)
    c2 = keras.layers.Identity(name="lstm_c_out")(c2)
    return keras.Model(inputs, [joints, h2, c2], name="cadstn_step")


def streaming_parts(step: keras.Model) -> tuple:
    """(spatial, temporal step, gate) of a model ``build_streaming_cadstn`` made: its three
    sub-models (the gate is named after its kind, ``gate`` or ``gate_network``)."""
    spatial, temporal = step.get_layer("spatial_inference"), step.get_layer("temporal_stream")
    gates = [layer for layer in step.layers if isinstance(layer, keras.Model) and layer not in (spatial, temporal)]
    if len(gates) != 1:
        raise ValueError(f"{step.name}: expected one gate sub-model besides the spatial and temporal ones, got "
                         f"{[g.name for g in gates]}")
    return spatial, temporal, gates[0]
