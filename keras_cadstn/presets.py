"""Pretrained presets shipped inside the package, in the manner of keras-hub's: named, versioned tracker
bundles trained only on the synthetic data this library generates (free to redistribute).

    keras_cadstn/assets/presets/NAME/
      preset.json     name, version, package version, the recipe, the bundle's JSON (pre-processing,
                      joint layout, networks' settings), the detector's settings, each network's
                      weight keys, and the sha256 of every file below
      networks.json   each network's Keras architecture (CADSTN, centre refiner, hand detector, the
                      low-rank streaming steps)
      weights.npz     every distinct weight array once, float16 (the storage is measured in the card)
      MODEL_CARD.md   what it was trained on, the command, its figures, limits and licences
      card.json       the card's figures

``load_preset(name)`` checks every file against its hash, then builds the networks once into a
bundle folder in the cache (``config.cache_dir()/presets``) and loads it as any bundle: the tracker,
exports and fine-tuning need no other code. ``tools/train_preset.py NAME`` makes a preset.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import zipfile
from importlib import metadata

import keras
import numpy as np

from keras_cadstn import fileio
from keras_cadstn.camera import Camera
from keras_cadstn.config import DEFAULT_PRESET, PresetRecipe, cache_dir
from keras_cadstn.errors import ConfigError, DataError
from keras_cadstn.fileio import file_sha256, read_json
from keras_cadstn.models.bundle import (FILES_KEY, LOW_RANK_KEY, MODEL_FILE, REFINER_FILE, SPEC_FILE, Bundle,
                                        load_bundle, load_keras_model, write_bundle_json)
from keras_cadstn.tracking.detector import ASSETS, DETECTOR_FILE, detector_for

DEFAULT = DEFAULT_PRESET
PRESETS_DIR = os.path.join(ASSETS, "presets")
FORMAT, VERSION = "keras_cadstn.preset", 1
META, NETWORKS, WEIGHTS, CARD, CARD_JSON = "preset.json", "networks.json", "weights.npz", "MODEL_CARD.md", "card.json"
CHECKED = (NETWORKS, WEIGHTS)  # the files preset.json records the hashes of
# a fixed zip date: the same weights make the same bytes
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def package_version() -> str:
    try:
        return metadata.version("keras_cadstn")
    except metadata.PackageNotFoundError:
        return "unknown"


def shipped_path(name: str) -> str:
    return os.path.join(PRESETS_DIR, name)


def list_presets() -> list:
    """The names of the presets shipped with the package."""
    if not os.path.isdir(PRESETS_DIR):
        return []
    return sorted(n for n in os.listdir(PRESETS_DIR) if os.path.isfile(os.path.join(PRESETS_DIR, n, META)))


def preset_path(name: str) -> str:
    """The folder of a shipped preset, or ``name`` itself where it is a preset folder."""
    if os.path.isfile(os.path.join(name, META)):
        return os.path.abspath(name)
    if os.sep not in name and os.path.isfile(os.path.join(shipped_path(name), META)):
        return shipped_path(name)
    raise ConfigError(f"unknown preset {name!r}: the package ships {list_presets() or 'none'} "
                      f"(or give a preset folder)")


def read_preset(name: str) -> tuple:
    """(folder, preset.json) of a preset, every recorded file checked against its sha256."""
    path = preset_path(name)
    meta_path = os.path.join(path, META)
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version_format") != VERSION:
        raise DataError(f"{meta_path}: not a keras_cadstn preset (format {FORMAT!r} version {VERSION})")
    for name_, digest in meta.get("sha256", {}).items():
        file = os.path.join(path, name_)
        if not os.path.isfile(file):
            raise DataError(f"{file}: missing from the preset")
        if file_sha256(file) != digest:
            raise DataError(f"{file}: damaged (its sha256 differs from the one {META} records); reinstall the package")
    if sorted(meta.get("sha256", {})) != sorted(CHECKED):
        raise DataError(f"{meta_path}: expected the hashes of {list(CHECKED)}")
    return path, meta


# ----------------------------------------------------------------------------- writing


def _weight_keys(model, store: dict) -> list:
    """Each weight of ``model`` as a key into ``store`` (float16 arrays, each distinct array once)."""
    keys = []
    for w in model.get_weights():
        half = np.asarray(w, np.float16)
        key = hashlib.sha256(repr(half.shape).encode() + half.tobytes()).hexdigest()[:20]
        store.setdefault(key, half)
        keys.append(key)
    return keys


def _write_npz(path: str, arrays: dict) -> None:
    """An .npz (``np.load`` reads it) whose bytes depend on the arrays alone: sorted, fixed dates."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arrays[key], allow_pickle=False)
            z.writestr(zipfile.ZipInfo(key + ".npy", date_time=ZIP_DATE), buf.getvalue())


def write_preset(out: str, bundle: Bundle, recipe: PresetRecipe, detector: str | None = None) -> str:
    """Pack ``bundle`` (its CADSTN, refiner, low-rank steps) and ``detector`` (a hand detector model
    file, its settings beside it as .json; default: the bundle's own or the package's) into the folder
    ``out``, written atomically; the card is ``write_card``'s. Returns ``out``."""
    bundle_meta = read_json(os.path.join(bundle.path, SPEC_FILE))
    bundle_meta.pop(FILES_KEY, None)  # the hashes of the trained folder's files; the built folder records its own
    for entry in (bundle_meta.get(LOW_RANK_KEY) or {}).values():  # facts of the trained folder, not of the preset
        entry.pop("source_sha256", None)
        entry["calibration"] = "the recipe's training records"
    detector = detector or detector_for(bundle.path)  # a preset always ships the detector it was tested with
    networks = {"cadstn": bundle.model, "detector": load_keras_model(detector, compile=False)}
    if bundle.refiner is not None:
        networks["refiner"] = bundle.refiner
    for rank in (bundle_meta.get(LOW_RANK_KEY) or {}):
        networks[f"step_rank{rank}"] = bundle.low_rank_step(int(rank))
    store = {}
    keys = {name: _weight_keys(model, store) for name, model in networks.items()}
    meta = {"format": FORMAT, "version_format": VERSION, "name": recipe.name, "version": recipe.version,
            "package_version": package_version(), "recipe": _recipe_dict(recipe), "bundle": bundle_meta,
            "detector_config": read_json(os.path.splitext(detector)[0] + ".json"),
            "weights": keys, "storage": "float16"}
    out = os.path.abspath(out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with fileio.atomic_path(out) as tmp:
        os.makedirs(tmp)
        with open(os.path.join(tmp, NETWORKS), "w") as f:
            json.dump({n: json.loads(m.to_json()) for n, m in networks.items()}, f, indent=None, sort_keys=True)
        _write_npz(os.path.join(tmp, WEIGHTS), store)
        meta["sha256"] = {n: file_sha256(os.path.join(tmp, n)) for n in CHECKED}
        with open(os.path.join(tmp, META), "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
        for kept in (CARD, CARD_JSON):  # a re-packed preset keeps its card until write_card replaces it
            if os.path.isfile(os.path.join(out, kept)):
                shutil.copy(os.path.join(out, kept), os.path.join(tmp, kept))
    return out


def _recipe_dict(recipe: PresetRecipe) -> dict:
    d = dataclasses.asdict(recipe)
    d["job"].pop("workdir")  # where it was trained is not part of what it is
    return json.loads(json.dumps(d, default=list))


# ----------------------------------------------------------------------------- loading


def materialised_path(meta: dict) -> str:
    """The cache folder a preset's networks are built into (one per name, version and weights)."""
    return os.path.join(cache_dir(), "presets", f"{meta['name']}-v{meta['version']}-{meta['sha256'][WEIGHTS][:12]}")


def load_preset(name: str = DEFAULT, camera: Camera | None = None) -> Bundle:
    """The preset ``name`` (a shipped name or a preset folder) as a tracker bundle; its hand detector
    is ``tracking.detector.detector_for(bundle.path)``. ``camera``: another sensor's intrinsics."""
    path, meta = read_preset(name)
    target = materialised_path(meta)
    if not os.path.isfile(os.path.join(target, SPEC_FILE)):
        _materialise(path, meta, target)
    return load_bundle(target, camera)


def _materialise(path: str, meta: dict, target: str) -> None:
    """Build each network from its architecture and float16 weights and write the bundle folder."""
    try:
        with np.load(os.path.join(path, WEIGHTS), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        architectures = read_json(os.path.join(path, NETWORKS))
        models = {}
        for name, keys in meta["weights"].items():
            model = keras.models.model_from_json(json.dumps(architectures[name]))
            model.set_weights([arrays[k].astype(np.float32) for k in keys])
            models[name] = model
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DataError(f"{path}: the preset's networks cannot be built from {NETWORKS} and {WEIGHTS} ({first})") from None
    files = {"cadstn": MODEL_FILE, "refiner": REFINER_FILE, "detector": DETECTOR_FILE}
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with fileio.atomic_path(target) as tmp:
        os.makedirs(tmp)
        for name, model in models.items():
            model.save(os.path.join(tmp, files.get(name, name + ".keras")))
        bundle_meta = meta["bundle"]
        for entry in (bundle_meta.get(LOW_RANK_KEY) or {}).values():  # made from this folder's CADSTN
            entry["source_sha256"] = file_sha256(os.path.join(tmp, MODEL_FILE))
        write_bundle_json(tmp, bundle_meta)
        fileio.write_json(os.path.join(tmp, os.path.splitext(DETECTOR_FILE)[0] + ".json"), meta["detector_config"])


# ----------------------------------------------------------------------------- the model card


def card_text(name: str) -> str:
    """The preset's MODEL_CARD.md."""
    path = os.path.join(preset_path(name), CARD)
    if not os.path.isfile(path):
        raise DataError(f"{path}: the preset has no model card")
    with open(path, encoding="utf-8") as f:
        return f.read()


def card_figures(name: str) -> dict:
    """The preset's card.json (its measured figures), or {} where it has none yet."""
    path = os.path.join(preset_path(name), CARD_JSON)
    return read_json(path) if os.path.isfile(path) else {}


def preset_size_mb(name: str) -> float:
    path = preset_path(name)
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)) / 1e6


def write_card(name: str, text: str, figures: dict) -> None:
    """Write the card (Markdown, made by ``tools/train_preset.py``) and its figures, atomically."""
    path = preset_path(name)
    fileio.write_text(os.path.join(path, CARD), text)
    fileio.write_json(os.path.join(path, CARD_JSON), figures)
