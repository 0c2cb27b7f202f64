"""A trained model that carries its pre-processing: one folder, one Keras model, one JSON.

    bundle/
      bundle.json   format, dataset spec (camera intrinsics + depth unit, cube, joint names,
                    reference joint), crop size M, clip length T, network config
      cadstn.keras  the whole CADSTN (spatial, temporal and gate sub-models inside)
      refiner.keras the hand-centre refiner (optional: ``keras_cadstn.tracking.refiner``), its settings in
                    bundle.json's "refiner"
      step_rank<r>.keras  the streaming step with low-rank fc layers (optional: ``add_low_rank_step``,
                    ``cadstn compress``), listed in bundle.json's "low_rank_steps"

Exports and the tracker take camera, cube, crop size and joint layout from here, never from code
defaults: a different camera is ``bundle.with_camera(Camera(...))``, not a code change.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings

import keras
import numpy as np

from keras_cadstn import fileio
from keras_cadstn.camera import Camera
from keras_cadstn.config import CADSTNConfig, RefinerConfig
from keras_cadstn.data.frames import DatasetSpec
from keras_cadstn.errors import CadstnError, ConfigError, DataError
from keras_cadstn.fileio import file_sha256, read_json
from keras_cadstn.models import build_temporal_stream, get_submodel, uses_centre_motion
from keras_cadstn.models.fusion import gate_input_of, leaf_layers
from keras_cadstn.models.low_rank import low_rank_model
from keras_cadstn.models.streaming import build_streaming_cadstn

FORMAT = "keras_cadstn.bundle"
VERSION = 1
MODEL_FILE = "cadstn.keras"
REFINER_FILE = "refiner.keras"
LOW_RANK_KEY = "low_rank_steps"
SPEC_FILE = "bundle.json"


# the refiner settings its trained network was built with (the others act at test or training time)
REFINER_NETWORK_SETTINGS = ("image_size", "filters", "fc_units")


@dataclasses.dataclass(frozen=True)
class Bundle:
    path: str
    model: object  # keras.Model: clips (B, T, M, M, 1) -> (B, T, 3K)
    spec: DatasetSpec
    config: CADSTNConfig
    refiner: object = None  # keras.Model: crop (B, S, S, 1) -> offset (B, 3), or None
    refiner_config: RefinerConfig | None = None

    @property
    def camera(self) -> Camera:
        return self.spec.camera

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def seq_len(self) -> int:
        return self.config.seq_len

    def with_camera(self, camera: Camera) -> "Bundle":
        """The same networks on another sensor (intrinsics, resolution, depth unit)."""
        return dataclasses.replace(self, spec=self.spec.with_camera(camera))

    def with_refiner_settings(self, **changes) -> "Bundle":
        """The same networks with the centre refiner's test-time settings changed (e.g.
        ``tracked_iterations``, ``max_behind_surface_mm``); the settings its network was built with
        (``REFINER_NETWORK_SETTINGS``) cannot change."""
        if self.refiner_config is None:
            raise ConfigError(f"{self.path}: the bundle has no centre refiner")
        built = sorted(set(changes) & set(REFINER_NETWORK_SETTINGS))
        if built:
            raise ConfigError(f"{self.path}: the refiner's {', '.join(built)} shape its trained network and cannot "
                              f"change; train another refiner")
        return dataclasses.replace(self, refiner_config=dataclasses.replace(self.refiner_config, **changes))

    def spatial_model(self):
        """crop (B, M, M, 1) -> joints (B, 3K): the spatial network's main path."""
        return get_submodel(self.model, "spatial_network")

    def temporal_model(self):
        return get_submodel(self.model, "temporal_network")

    def gate_model(self):
        """crop (B, M, M, 1) -> w1 (B, 3K), the fusion weight of the temporal prediction."""
        return get_submodel(self.model, "gate_network")

    def temporal_step(self):
        """[crop, h, c] (+ centre_motion where the network reads it) -> [joints, h', c']: the
        temporal network one frame at a time."""
        return build_temporal_stream(self.temporal_model())

    def frame_model(self, spatial=None):
        """[crop (B, M, M, 1), lstm_h, lstm_c] (+ centre_motion (B, 3) where the temporal network
        reads it) -> [fused joints (B, 3K), lstm_h', lstm_c']: one streaming step of the whole
        CADSTN (what the tracker runs and what TFLite/ONNX export).
        ``spatial``: another form of the spatial main path to use (e.g. with folded convolutions)."""
        return build_streaming_cadstn(spatial or self.spatial_model(), self.temporal_step(), self.gate_model())

    def step_model(self, fc_rank: int | None = None):
        """The streaming step the tracker runs: ``frame_model()``, or with ``fc_rank`` the bundle's
        step with low-rank fc layers of that rank (``low_rank_step``)."""
        return self.frame_model() if fc_rank is None else self.low_rank_step(fc_rank)

    def low_rank_step(self, rank: int):
        """The streaming step with low-rank fc layers of ``rank`` stored in the bundle
        (``add_low_rank_step``): the same inputs and outputs as ``frame_model()``."""
        spec_path = os.path.join(self.path, SPEC_FILE)
        entry = (read_json(spec_path).get(LOW_RANK_KEY) or {}).get(str(rank))
        if entry is None:
            raise ConfigError(f"{self.path}: the bundle has no step of fc rank {rank}; make one with `cadstn compress "
                              f"--bundle {self.path} --fc-rank {rank} --records 'TRAIN_RECORDS/*.tfrecord'`")
        path = os.path.join(self.path, entry["model"])
        if entry.get("source_sha256") != file_sha256(os.path.join(self.path, MODEL_FILE)):
            raise DataError(f"{path}: made from another {MODEL_FILE} than the bundle's; make it again with "
                            f"`cadstn compress --bundle {self.path} --fc-rank {rank} ...`")
        model = load_keras_model(path, compile=False)
        names = [t.name.split(":")[0] for t in model.inputs]
        expected = [t.name.split(":")[0] for t in self.frame_model().inputs]
        if names != expected:
            raise DataError(f"{path}: inputs {names}, expected the bundle's step inputs {expected}")
        return model

    def to_json(self) -> dict:
        meta = {"format": FORMAT, "version": VERSION, "dataset": self.spec.to_dict(),
                "image_size": self.config.image_size, "seq_len": self.config.seq_len,
                "network": self.config.to_dict(), "model": MODEL_FILE,
                **({"refiner": {"model": REFINER_FILE, "config": self.refiner_config.to_dict()}}
                   if self.refiner is not None else {}),
                "normalisation": {"crop": "(d - centre_z) / (cube_z / 2), no reading or outside cube -> +1",
                                  "joints": "(xyz - centre_xyz) / (cube / 2)"}}
        return {**meta, RECORD_KEY: preprocessing_digest(meta)}


def load_keras_model(path: str, compile: bool = True):
    """``keras.models.load_model`` with a one-line ``DataError`` for a missing, truncated or
    corrupt file (Keras says "File not found" for a damaged zip)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: model file not found")
    try:
        with warnings.catch_warnings():  # optimizer state is not always needed (inference)
            warnings.filterwarnings("ignore", message=".*[Ss]kipping variable loading.*")
            return keras.models.load_model(path, compile=compile)
    except (ValueError, OSError, KeyError, EOFError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DataError(f"{path}: not a readable Keras model file ({first})") from None


def network_options_mismatch(model, config: CADSTNConfig, source: str) -> str | None:
    """Where a CADSTN model's inputs disagree with ``config``'s options (centre motion, gate input),
    what to say (``source`` names where the config comes from); None where they agree."""
    motion = uses_centre_motion(model)
    if motion != config.centre_motion:
        return (f"the model {'reads' if motion else 'does not read'} the centre motion, {source} says "
                f"centre_motion={config.centre_motion}")
    gate = gate_input_of(model)
    if gate != config.gate_input:
        return f"the model's gate reads the {gate}, {source} says gate_input={config.gate_input!r}"
    return None


def layer_sizes_mismatch(model, config: CADSTNConfig) -> str | None:
    """Where the model's joints or LSTM width disagree with the bundle's network settings."""
    outputs = model.outputs[0].shape[-1]
    if outputs != config.num_outputs:
        return f"the model predicts {outputs // 3} joints, the bundle's JSON says {config.num_joints}"
    units = {layer.units for layer in leaf_layers(model) if isinstance(layer, keras.layers.LSTM)}
    if units and units != {config.lstm_units}:
        return f"the model's LSTM has {sorted(units)} units, the bundle's JSON says lstm_units={config.lstm_units}"
    return None


def save_bundle(path: str, model, spec: DatasetSpec, config: CADSTNConfig, refiner=None,
                refiner_config: RefinerConfig | None = None) -> str:
    """Write the bundle folder atomically (a temporary sibling renamed into place); returns path.
    ``refiner``: a trained centre refiner (``keras_cadstn.training.refiner.train_refiner``) to ship with it."""
    if "gate" not in [layer.name for layer in model.layers] or len(model.inputs[0].shape) != 5:
        raise ValueError("save_bundle expects a CADSTN model (clips -> joints, with a gate)")
    mismatch = network_options_mismatch(model, config, "its config")
    if mismatch:
        raise ValueError(mismatch)
    if config.num_joints != spec.num_joints:
        raise ValueError(f"network predicts {config.num_joints} joints, dataset spec has {spec.num_joints}")
    if refiner is not None:
        refiner_config = refiner_config or RefinerConfig()
        expected = (None, refiner_config.image_size, refiner_config.image_size, 1)
        if tuple(refiner.input.shape) != expected or tuple(refiner.output.shape) != (None, 3):
            raise ValueError(f"save_bundle expects a centre refiner {expected} -> (None, 3), got "
                             f"{tuple(refiner.input.shape)} -> {tuple(refiner.output.shape)}")
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with fileio.atomic_path(path) as tmp:
        os.makedirs(tmp)
        model.save(os.path.join(tmp, MODEL_FILE))
        if refiner is not None:
            refiner.save(os.path.join(tmp, REFINER_FILE))
        meta = Bundle(path, model, spec, config, refiner, refiner_config).to_json()
        write_bundle_json(tmp, meta)
    return path


def write_bundle_json(folder: str, meta: dict) -> None:
    """bundle.json with the sha256 of each network file it names (a replaced or damaged file is
    refused when the bundle loads)."""
    files = [meta["model"]] + ([meta["refiner"]["model"]] if "refiner" in meta else [])
    meta = {**meta, FILES_KEY: {f: file_sha256(os.path.join(folder, f)) for f in files}}
    fileio.write_json(os.path.join(folder, SPEC_FILE), meta)


def check_files(path: str, meta: dict) -> None:
    for name, digest in (meta.get(FILES_KEY) or {}).items():
        file = os.path.join(path, name)
        if os.path.isfile(file) and file_sha256(file) != digest:
            raise DataError(f"{file}: damaged or replaced since the bundle was written (its sha256 differs from "
                            f"{SPEC_FILE}'s); restore it or write the bundle again")


def low_rank_file(rank: int) -> str:
    return f"step_rank{rank}.keras"


def add_low_rank_step(bundle: Bundle, rank: int, crops, source: str) -> str:
    """Store in the bundle the streaming step with low-rank fc layers of ``rank``
    (``models.low_rank.low_rank_model``), fitted to what its layers read on ``crops`` (N, M, M, 1):
    training crops, named by ``source`` (e.g. the records' glob). Written atomically, then listed in
    bundle.json with the hash of the model it was made from; a step of the same rank is replaced.
    Returns its path."""
    crops = np.asarray(crops, np.float32)
    if crops.ndim != 4 or crops.shape[1:] != (bundle.image_size, bundle.image_size, 1):
        raise DataError(f"{source}: crops of shape {crops.shape}, expected (N, {bundle.image_size}, "
                        f"{bundle.image_size}, 1)")
    try:
        model = low_rank_model(bundle.frame_model(), rank, crops)
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None
    path = os.path.join(bundle.path, low_rank_file(rank))
    with fileio.atomic_path(path, ".keras") as tmp:
        model.save(tmp)
    spec_path = os.path.join(bundle.path, SPEC_FILE)
    meta = read_json(spec_path)
    meta.setdefault(LOW_RANK_KEY, {})[str(rank)] = {
        "model": low_rank_file(rank), "source_sha256": file_sha256(os.path.join(bundle.path, MODEL_FILE)),
        "calibration": source, "crops": int(len(crops))}
    fileio.write_json(spec_path, meta)
    return path


REQUIRED_KEYS = ("format", "version", "dataset", "image_size", "seq_len", "network", "model")
# the pre-processing and network settings the networks were trained with, hashed when the bundle is
# written: a hand-edited cube, crop size, joint list or layer size no longer matches it
RECORDED = ("dataset", "image_size", "seq_len", "network")
RECORD_KEY = "preprocessing_sha256"
FILES_KEY = "sha256"


def preprocessing_digest(meta: dict) -> str:
    return hashlib.sha256(json.dumps({k: meta[k] for k in RECORDED}, sort_keys=True).encode()).hexdigest()


def read_bundle_json(path: str) -> tuple:
    """(meta dict, DatasetSpec, CADSTNConfig) of a bundle folder, every field checked."""
    spec_path = os.path.join(path, SPEC_FILE)
    if not os.path.isfile(spec_path):
        raise DataError(f"{path}: not a keras_cadstn bundle (no {SPEC_FILE})")
    meta = read_json(spec_path)
    if not isinstance(meta, dict):
        raise DataError(f"{spec_path}: expected a JSON object")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise DataError(f"{spec_path}: expected format {FORMAT!r} version {VERSION}, "
                        f"got {meta.get('format')!r} version {meta.get('version')!r}")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise DataError(f"{spec_path}: missing {missing}")
    try:
        spec, config = DatasetSpec.from_dict(meta["dataset"]), CADSTNConfig.from_dict(meta["network"])
    except (CadstnError, TypeError, ValueError, KeyError, AttributeError) as e:
        raise DataError(f"{spec_path}: {e}") from None
    if config.num_joints != spec.num_joints:
        raise DataError(f"{spec_path}: the network predicts {config.num_joints} joints, the dataset spec "
                        f"names {spec.num_joints}")
    if (config.image_size, config.seq_len) != (meta["image_size"], meta["seq_len"]):
        raise DataError(f"{spec_path}: image_size/seq_len {meta['image_size']}/{meta['seq_len']} differ from the "
                        f"network's {config.image_size}/{config.seq_len}")
    if RECORD_KEY in meta and meta[RECORD_KEY] != preprocessing_digest(meta):  # the edits no check above sees
        raise DataError(f"{spec_path}: its {', '.join(RECORDED)} differ from what the networks were trained with "
                        f"(edited after training: {RECORD_KEY} no longer matches); restore the bundle's JSON")
    return meta, spec, config


def load_bundle(path: str, camera: Camera | None = None) -> Bundle:
    """Load a bundle; ``camera`` replaces the training camera (another sensor, same networks)."""
    meta, spec, config = read_bundle_json(path)
    model_path = os.path.join(path, meta["model"])
    if not os.path.isfile(model_path):
        raise DataError(f"{path}: bundle model file {meta['model']} is missing")
    check_files(path, meta)
    model = load_keras_model(model_path, compile=False)
    refiner, refiner_config = load_refiner(path, meta)
    bundle = Bundle(os.path.abspath(path), model, spec, config, refiner, refiner_config)
    expected = (None, bundle.seq_len, bundle.image_size, bundle.image_size, 1)
    if tuple(model.inputs[0].shape) != expected:
        raise DataError(f"{model_path}: model input {tuple(model.inputs[0].shape)} does not match the "
                        f"bundle's {expected}")
    mismatch = network_options_mismatch(model, config, "the bundle's JSON") or layer_sizes_mismatch(model, config)
    if mismatch:
        raise DataError(f"{model_path}: {mismatch}")
    return bundle.with_camera(camera) if camera is not None else bundle


def load_refiner(path: str, meta: dict) -> tuple:
    """(refiner model, RefinerConfig) named by a bundle's JSON, or (None, None) without one."""
    entry = meta.get("refiner")
    if entry is None:
        return None, None
    where = os.path.join(path, SPEC_FILE)
    try:
        config = RefinerConfig.from_dict(entry["config"])
        model_path = os.path.join(path, entry["model"])
    except (TypeError, ValueError, KeyError) as e:
        raise DataError(f"{where}: bad \"refiner\" entry ({e})") from None
    refiner = load_keras_model(model_path, compile=False)
    expected = (None, config.image_size, config.image_size, 1)
    if tuple(refiner.input.shape) != expected:
        raise DataError(f"{model_path}: refiner input {tuple(refiner.input.shape)} does not match the bundle's {expected}")
    return refiner, config
