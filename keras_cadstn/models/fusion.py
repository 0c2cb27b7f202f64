"""Fusion Network and the whole CADSTN model (Algorithm 1's third stage)."""
from __future__ import annotations

import keras
from keras import layers

from keras_cadstn.config import CADSTNConfig
from keras_cadstn.models.blocks import crop_input, motion_input, regression_network
from keras_cadstn.models.layers import FrozenSubmodel, GatedFusion
from keras_cadstn.models.spatial import build_spatial_network, spatial_inference_model
from keras_cadstn.models.temporal import MOTION_SCALE, build_temporal_network, uses_centre_motion


def build_gate_network(config: CADSTNConfig) -> keras.Model:
    """Baseline-shaped network on the depth crop ending in a sigmoid: w1 in (0, 1)^{3K}.

    Ours: its last fc's kernel starts at zero, so the untrained gate is one fixed weight for every
    input (0.5 here; the fusion stage sets its bias to the best constant on the gate's training
    data, ``train.start_gate_at_best_constant``) and training moves it only where the inputs ask.
    A randomly initialised last fc starts from a different weight per coordinate and per crop,
    noise that the short fusion stage does not remove.
    """
    return regression_network(config, "gate_network", activation="sigmoid", last_initializer="zeros")


GATE_HIDDEN = 64  # ours: units of the prediction gate's hidden layer


def build_prediction_gate(config: CADSTNConfig, centre_motion: bool = False, name: str = "gate_network") -> keras.Model:
    """Ours: [J_spa (B, T, 3K), J_temp (B, T, 3K)] (+ centre_motion (B, T, 3)) -> w1 (B, T, 3K),
    for any T (the streaming step runs it on T = 1).

    An MLP per frame on the two predictions, their difference (x10: the networks disagree by a few
    hundredths of the half cube) and the centre motion (x10, as the temporal network scales it):
    ~0.02 M weights instead of the crop gate's millions, for a gate trained on the few validation
    sequences the two networks have not fitted. Its last fc starts at zero, as the crop gate's.
    """
    shape = (None, config.num_outputs)  # any number of frames: a clip, or one streaming step
    j_spa, j_temp = keras.Input(shape, name="spatial_joints"), keras.Input(shape, name="temporal_joints")
    inputs = [j_spa, j_temp]
    disagreement = layers.Rescaling(10.0, name="disagreement_scale")(layers.Subtract(name="disagreement")([j_temp, j_spa]))
    features = [j_spa, j_temp, disagreement]
    if centre_motion:
        motion = keras.Input((None, 3), name="centre_motion")
        inputs.append(motion)
        features.append(layers.Rescaling(MOTION_SCALE, name="motion_scale")(motion))
    x = layers.Dense(GATE_HIDDEN, activation="relu", name="gate_hidden")(layers.Concatenate(name="gate_features")(features))
    w1 = layers.Dense(config.num_outputs, activation="sigmoid", kernel_initializer="zeros", name="joints")(x)
    return keras.Model(inputs, w1, name=name)


def reads_predictions(gate: keras.Model) -> bool:
    """Whether a gate is the prediction gate (inputs: the two networks' joints) or the crop gate."""
    return gate.inputs[0].name.split(":")[0] == "spatial_joints"


def build_fusion_network(spatial: keras.Model, temporal: keras.Model,
                         config: CADSTNConfig = CADSTNConfig(), with_weights: bool = False) -> keras.Model:
    """Clips (B, T, M, M, 1) -> J_out (B, T, 3K) = w1 * J_temp + (1 - w1) * J_spa.

    The spatial and temporal networks are wrapped frozen (no training, dropout off); only the gate
    trains. ``with_weights`` also returns w1 (B, T, 3K). A temporal network that reads the centre
    motion makes it an input of this model too: ``[clip, centre_motion (B, T, 3)]``.
    """
    clips = crop_input(config, name="clip", time=True)
    inputs = [clips, motion_input(config)] if uses_centre_motion(temporal) else clips
    if isinstance(spatial.output, dict):
        # the main path only (same layers): a wrapped multi-output model would make Keras attach
        # the auxiliary outputs' names to the fusion loss
        spatial = spatial_inference_model(spatial)
    j_spa = FrozenSubmodel(spatial, per_frame=True, name="frozen_spatial")(clips)
    j_temp = FrozenSubmodel(temporal, name="frozen_temporal")(inputs)
    if config.gate_input == "predictions":
        motion = [inputs[1]] if uses_centre_motion(temporal) else []
        gate = build_prediction_gate(config, centre_motion=bool(motion), name="gate")
        w1 = gate([j_spa, j_temp] + motion)
    else:
        w1 = layers.TimeDistributed(build_gate_network(config), name="gate")(clips)
    j_out = GatedFusion(name="joints")([w1, j_temp, j_spa])
    return keras.Model(inputs, [j_out, w1] if with_weights else j_out, name="cadstn")


def build_cadstn(config: CADSTNConfig | None = None, **overrides) -> keras.Model:
    """The whole CADSTN over a clip: (B, T, M, M, 1) -> (B, T, 3K), freshly initialised.

    Its sub-models are reachable by name: ``get_submodel(model, "spatial_network")`` (the spatial
    main path, whose layers are those of the training model with auxiliary outputs),
    ``"temporal_network"`` and ``"gate_network"``.
    ``overrides`` replace fields of ``config`` (default: the paper's ``CADSTNConfig``), e.g. ``num_joints=16``.
    """
    config = (config or CADSTNConfig()).replace(**overrides)
    return build_fusion_network(build_spatial_network(config), build_temporal_network(config), config)


def gate_input_of(cadstn: keras.Model) -> str:
    """'crop' or 'predictions': what the gate of a CADSTN model reads (``CADSTNConfig.gate_input``)."""
    return "predictions" if reads_predictions(get_submodel(cadstn, "gate_network")) else "crop"


def gate_weights_model(cadstn: keras.Model) -> keras.Model:
    """The CADSTN's inputs -> the gate's w1 (B, T, 3K) (the same layers), whatever the gate reads."""
    return keras.Model(cadstn.inputs, cadstn.get_layer("joints").input[0], name="cadstn_gate_weights")


def get_submodel(cadstn: keras.Model, name: str) -> keras.Model:
    """'spatial_network', 'temporal_network' or 'gate_network' of a CADSTN model (not a copy)."""
    where = {"spatial_network": "frozen_spatial", "temporal_network": "frozen_temporal", "gate_network": "gate"}
    if name not in where:
        raise ValueError(f"unknown sub-model {name!r}; expected one of {sorted(where)}")
    layer = cadstn.get_layer(where[name])
    return layer if name == "gate_network" and isinstance(layer, keras.Model) else layer.layer  # prediction gate: itself


def leaf_layers(model: keras.Model):
    """The layers of ``model`` with nested models (also inside a TimeDistributed) walked into."""
    for layer in model.layers:
        inner = getattr(layer, "layer", None)
        if isinstance(layer, keras.Model) or isinstance(inner, keras.Model):
            yield from leaf_layers(layer if isinstance(layer, keras.Model) else inner)
        elif layer.weights:
            yield layer


def copy_matching_weights(model: keras.Model, source: keras.Model) -> int:
    """Set each layer of ``model`` from the layer of the same name in ``source`` whose weights have the
    same shapes (fine-tuning from a trained network); returns how many layers were set."""
    found = {layer.name: layer for layer in leaf_layers(source)}
    copied = 0
    for layer in leaf_layers(model):
        other = found.get(layer.name)
        if other is not None and [w.shape for w in layer.weights] == [w.shape for w in other.weights]:
            layer.set_weights(other.get_weights())
            copied += 1
    return copied
