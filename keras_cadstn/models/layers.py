"""The few custom layers the networks need, and the fusion stage's loss; registered, with complete
configs (no Lambda)."""
from __future__ import annotations

import keras
from keras import ops

from keras_cadstn.data.preprocessing import slice_volume

PACKAGE = "keras_cadstn"


@keras.saving.register_keras_serializable(package=PACKAGE)
class SliceVolume(keras.layers.Layer):
    """Normalised depth crop (..., M, M, 1) -> sliced 3D volume (..., M, M, L), inside the model."""
    def __init__(self, num_slices: int = 8, float_steps: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.num_slices = num_slices
        self.float_steps = float_steps  # float32 exports only (``slice_volume``)

    def call(self, crop):
        return slice_volume(crop, self.num_slices, self.float_steps)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_slices,)

    def get_config(self):
        return {**super().get_config(), "num_slices": self.num_slices, "float_steps": self.float_steps}


@keras.saving.register_keras_serializable(package=PACKAGE)
class GatedFusion(keras.layers.Layer):
    """J_out = w1 * J_temp + (1 - w1) * J_spa, per coordinate (w2 = 1 - w1)."""
    def call(self, inputs):
        w1, j_temporal, j_spatial = inputs
        return w1 * j_temporal + (1.0 - w1) * j_spatial

    def compute_output_shape(self, input_shapes):
        return input_shapes[1]


@keras.saving.register_keras_serializable(package=PACKAGE)
class FrozenSubmodel(keras.layers.Wrapper):
    """A trained sub-network used frozen: its weights are not trained and it always runs in
    inference mode (dropout off), whatever the outer model's ``training`` flag.

    ``per_frame``: apply a single-frame model to every frame of (B, T, ...) input.
    """
    def __init__(self, layer, per_frame: bool = False, **kwargs):
        super().__init__(layer, **kwargs)
        self.per_frame = per_frame
        self.layer.trainable = False
        self.trainable = False

    @property
    def metrics(self):
        # A loaded sub-model is compiled and owns a "loss" tracker that is never updated here; left
        # visible, it overwrites the outer model's loss in fit/evaluate logs with 0.
        return []

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(tuple(input_shape[1:]) if self.per_frame else input_shape)
        self.built = True

    def call(self, inputs, training=None):
        if not self.per_frame:
            return self.layer(inputs, training=False)
        shape = ops.shape(inputs)
        frames = ops.reshape(inputs, (-1,) + tuple(inputs.shape[2:]))
        out = self.layer(frames, training=False)
        return ops.reshape(out, (shape[0], shape[1]) + tuple(out.shape[1:]))

    def compute_output_shape(self, input_shape):
        if self.per_frame:
            spec = keras.KerasTensor((None,) + tuple(input_shape[2:]))
            out = self.layer.compute_output_spec(spec)
            return tuple(input_shape[:2]) + tuple(out.shape[1:])
        several = isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple))
        spec = [keras.KerasTensor(s) for s in input_shape] if several else keras.KerasTensor(input_shape)
        return tuple(self.layer.compute_output_spec(spec).shape)

    def get_config(self):
        return {**super().get_config(), "per_frame": self.per_frame}


@keras.saving.register_keras_serializable(package=PACKAGE)
def mean_joint_distance(y_true, y_pred):
    """Mean over joints (and frames, clips) of the Euclidean distance between predicted and true
    joints (..., 3K), in the joints' normalised units: the paper's metric as a loss. Ours, for the
    fusion stage: an L2 loss weighs the few frames with large errors (occluded ones) by their
    square, and pulls the gate to the weights that suit those frames rather than the mean error."""
    diff = ops.reshape(y_pred - y_true, (-1, 3))
    return ops.mean(ops.sqrt(ops.sum(diff * diff, axis=-1) + 1e-9))
