"""Low-rank fully connected layers: a deployment option of ours, not part of the paper.

At 128x128 the streaming step holds 36M weights, 25M of them in three fc layers that read the
flattened 8x8x128 conv features (the spatial network's two H1 layers and the temporal encoder's fc1)
and 2M in the two H2 layers. Every frame reads all of them: 36 MB in int8, more than a 2-core
machine's L3 cache, so the step waits on memory. A trained kernel W (in, out) is replaced by two
factors, W ~ A B with A (in, r) and B (r, out), fitted to what the layer reads on training crops
(``factorise_dense``; the kernel's truncated SVD where no crops reach it), computed once, no
retraining. What it does to the error is measured, never assumed: the rank was chosen on the
validation split (docs/decisions.md).
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_cadstn.models.layers import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class LowRankDense(keras.layers.Layer):
    """``activation(x @ first @ second + bias)``: a Dense layer of ``units`` whose kernel is the
    product of ``first`` (in, rank) and ``second`` (rank, units)."""
    def __init__(self, units: int, rank: int, activation=None, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        if units < 1 or rank < 1:
            raise ValueError(f"units and rank must be >= 1, got units={units}, rank={rank}")
        self.units, self.rank, self.use_bias = int(units), int(rank), bool(use_bias)
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        fan_in = input_shape[-1]
        self.first = self.add_weight(name="first", shape=(fan_in, self.rank), initializer="glorot_uniform")
        self.second = self.add_weight(name="second", shape=(self.rank, self.units), initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros") if self.use_bias else None

    def call(self, x):
        y = ops.matmul(ops.matmul(x, self.first), self.second)
        if self.bias is not None:
            y = y + self.bias
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "rank": self.rank, "use_bias": self.use_bias,
                "activation": keras.activations.serialize(self.activation)}


def worth_factorising(layer, rank: int) -> bool:
    """Whether ``layer`` is a plain Dense layer whose rank-``rank`` factors hold at most half of its
    kernel's weights (the 3K-wide output layers only at small ranks: 16 for K = 14)."""
    if type(layer) is not keras.layers.Dense:
        return False
    fan_in, units = layer.kernel.shape
    return 2 * rank * (fan_in + units) <= fan_in * units


def factorise_dense(layer, rank: int, inputs: np.ndarray | None = None) -> LowRankDense:
    """A ``LowRankDense`` from a trained Dense layer.

    Without ``inputs``: the kernel's truncated SVD U S V^T (the best rank-r kernel in the Frobenius
    norm). With ``inputs`` X (N, in), what the layer reads on real crops: the rank-r kernel whose
    outputs on X lie closest to the layer's, W V_r V_r^T with V_r the top right singular vectors
    of X W (reduced-rank regression; the same error for any input is not the goal, only for the
    inputs the layer sees). Either way the two factors are put on the same scale per component
    (what int8 weights need)."""
    kernel = np.asarray(layer.kernel, np.float64)
    if inputs is None:
        u, s, vt = np.linalg.svd(kernel, full_matrices=False)
        first, second = u[:, :rank] * s[:rank], vt[:rank]
    else:
        inputs = np.asarray(inputs, np.float64).reshape(-1, kernel.shape[0])
        if len(inputs) < rank:
            raise ValueError(f"{layer.name}: a rank-{rank} factorisation needs at least {rank} input rows, "
                             f"got {len(inputs)}")
        _, _, vt = np.linalg.svd(inputs @ kernel, full_matrices=False)
        first, second = kernel @ vt[:rank].T, vt[:rank]
    # rows of ``second`` have unit norm: move the square root of each column's norm across
    scale = np.sqrt(np.maximum(np.linalg.norm(first, axis=0), 1e-12))
    low = LowRankDense(layer.units, rank, activation=layer.activation, use_bias=layer.use_bias,
                       name=f"{layer.name}_rank{rank}", dtype=layer.dtype_policy)
    low.build((None, kernel.shape[0]))
    weights = [first / scale, second * scale[:, None]] + ([np.asarray(layer.bias)] if layer.use_bias else [])
    low.set_weights([w.astype(np.float32) for w in weights])
    return low


def _functional_models(model: keras.Model):
    """``model`` and every functional model nested in it, outermost first."""
    yield model
    for layer in model.layers:
        if isinstance(layer, keras.Model) and hasattr(layer, "inputs"):
            yield from _functional_models(layer)


def dense_inputs(model: keras.Model, crops: np.ndarray, rank: int, batch_size: int = 64) -> dict:
    """{Dense layer: what it reads (N, in)} for the layers ``worth_factorising`` at ``rank`` inside
    the (nested) models of ``model`` whose one input is a crop like ``crops`` (N, M, M, 1): in the
    CADSTN step, the spatial network's main path and the temporal network's frame encoder. A
    layer called on several paths (the spatial H layers also serve the auxiliary outputs, which a
    deployed model does not compute) is taken on the path of the model that holds it."""
    found = {}
    for sub in _functional_models(model):
        if len(sub.inputs) != 1 or tuple(sub.inputs[0].shape[1:]) != tuple(crops.shape[1:]):
            continue
        recorded = []

        def call(layer, *args, **kwargs):  # a copy sharing every layer, its Dense inputs recorded
            if worth_factorising(layer, rank) and layer not in found:
                recorded.append((layer, args[0]))
            return layer(*args, **kwargs)
        copy = keras.models.clone_model(sub, clone_function=lambda layer: layer, call_function=call)
        if recorded:
            probe = keras.Model(copy.inputs, [tensor for _, tensor in recorded])
            outputs = probe.predict(crops, batch_size=batch_size, verbose=0)
            outputs = outputs if isinstance(outputs, list) else [outputs]
            found.update({layer: x for (layer, _), x in zip(recorded, outputs)})
    return found


def low_rank_model(model: keras.Model, rank: int, crops: np.ndarray | None = None) -> keras.Model:
    """The same model with every Dense layer that ``worth_factorising`` replaced by its rank-``rank``
    ``factorise_dense``; every other layer is shared, not copied (nested models are rebuilt).
    ``crops`` (N, M, M, 1): fit the factors to what the layers read on these crops (``dense_inputs``;
    layers that do not read from the crop alone get the kernel's truncated SVD)."""
    rank = int(rank)
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if not any(worth_factorising(layer, rank) for sub in _functional_models(model) for layer in sub.layers):
        raise ValueError(f"no fc layer of {model.name} keeps less than half of its weights at rank {rank}: "
                         f"nothing to gain")
    inputs = {} if crops is None else dense_inputs(model, np.asarray(crops, np.float32), rank)

    def clone(layer):
        return factorise_dense(layer, rank, inputs.get(layer)) if worth_factorising(layer, rank) else layer
    return keras.models.clone_model(model, clone_function=clone, recursive=True)


def weight_count(model: keras.Model) -> int:
    """Weights a forward pass reads (each shared variable once)."""
    seen = {id(w): int(np.prod(w.shape)) for w in model.weights}
    return sum(seen.values())
