"""Presets: the registry, the file format's round trip and its checks, the CLI default, fine-tuning."""
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import REAL_FRAMES, SMALL, make_tiny_bundle
from keras_cadstn import cli, presets
from keras_cadstn.config import preset
from keras_cadstn.errors import ConfigError, DataError
from keras_cadstn.models import get_submodel
from keras_cadstn.models.fusion import leaf_layers
from keras_cadstn.models.bundle import add_low_rank_step
from keras_cadstn.tracking.detector import DETECTOR_FILE, DETECTOR_PATH, detector_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_ASSETS_MB = 50.0


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_CADSTN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A tiny bundle with a low-rank step, and the preset packed from it."""
    folder = tmp_path_factory.mktemp("packed")
    bundle = make_tiny_bundle(folder)
    crops = np.random.default_rng(0).uniform(-1, 1, (16, SMALL, SMALL, 1)).astype(np.float32)
    add_low_rank_step(bundle, 4, crops, "random crops")
    return bundle, presets.write_preset(str(folder / "preset"), bundle, preset("tiny_test"))


def test_a_preset_round_trips_every_network_within_float16(packed, cache):
    bundle, path = packed
    loaded = presets.load_preset(path)
    assert loaded.path.startswith(str(cache)) and loaded.config == bundle.config and loaded.spec == bundle.spec
    clips = np.random.default_rng(1).uniform(-1, 1, (2, 4, SMALL, SMALL, 1)).astype(np.float32)
    for a, b in ((bundle.model, loaded.model), (bundle.refiner, loaded.refiner),
                 (bundle.low_rank_step(4), loaded.low_rank_step(4))):
        weights = [np.asarray(w) for w in a.get_weights()]
        assert [w.shape for w in weights] == [w.shape for w in b.get_weights()]
        for w, v in zip(weights, b.get_weights()):  # float16 rounding: a relative 2^-11 at most
            np.testing.assert_allclose(v, w.astype(np.float16).astype(np.float32), rtol=0, atol=0)
    pred, again = bundle.model.predict(clips, verbose=0), loaded.model.predict(clips, verbose=0)
    np.testing.assert_allclose(again, pred, atol=2e-3)
    # the package's detector is inside, and the tracker picks it
    assert detector_for(loaded.path) == os.path.join(loaded.path, DETECTOR_FILE) != DETECTOR_PATH
    shipped = keras.models.load_model(DETECTOR_PATH, compile=False)
    for w, v in zip(shipped.get_weights(), keras.models.load_model(detector_for(loaded.path)).get_weights()):
        np.testing.assert_array_equal(v, w.astype(np.float16).astype(np.float32))
    assert presets.load_preset(path).path == loaded.path  # built once, then reused


def test_the_weights_of_a_preset_are_stored_once(packed):
    bundle, path = packed
    meta = json.load(open(os.path.join(path, presets.META)))
    with np.load(os.path.join(path, presets.WEIGHTS)) as npz:
        stored = {k: npz[k] for k in npz.files}
    keys = [k for net in meta["weights"].values() for k in net]
    assert set(keys) == set(stored) and len(stored) < len(keys)  # the low-rank step shares the CADSTN's arrays
    assert all(a.dtype == np.float16 for a in stored.values())
    assert meta["bundle"]["dataset"]["cube"] == list(bundle.spec.cube)  # the pre-processing travels with it
    assert "workdir" not in meta["recipe"]["job"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
@pytest.mark.parametrize("victim", [presets.WEIGHTS, presets.NETWORKS])
def test_a_damaged_preset_file_is_named(packed, cache, tmp_path, damage, victim):
    path = shutil.copytree(packed[1], tmp_path / "copy")
    file = os.path.join(path, victim)
    data = open(file, "rb").read()
    if damage == "delete":
        os.remove(file)
    else:
        open(file, "wb").write(data[:-1] + bytes([data[-1] ^ 1]) if damage == "flip" else data[: len(data) // 2])
    with pytest.raises(DataError, match=f"{file}: (damaged|missing)"):
        presets.load_preset(str(path))


def test_a_preset_json_that_is_not_one_is_refused(packed, tmp_path):
    path = shutil.copytree(packed[1], tmp_path / "copy")
    open(os.path.join(path, presets.META), "w").write("{\"format\": \"something else\"}")
    with pytest.raises(DataError, match="not a keras_cadstn preset"):
        presets.read_preset(str(path))
    open(os.path.join(path, presets.META), "w").write("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        presets.read_preset(str(path))


def test_unknown_names_list_what_is_shipped():
    with pytest.raises(ConfigError, match=r"unknown preset 'nope'.*" + presets.DEFAULT):
        presets.preset_path("nope")


def test_every_shipped_preset_has_its_card_and_the_assets_fit_the_limit():
    names = presets.list_presets()
    assert presets.DEFAULT in names
    for name in names:
        assert "## Limits" in presets.card_text(name) and "## Licences" in presets.card_text(name)
        figures = presets.card_figures(name)
        assert figures["name"] == name and figures["real_frames"]["label-free"]["frames"] == 8
        presets.read_preset(name)  # every hash holds
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(presets.ASSETS) for f in fs)
    assert total / 1e6 <= MAX_ASSETS_MB


def test_cadstn_presets_lists_and_prints_cards(capsys):
    assert cli.main(["presets"]) == 0
    assert f"| {presets.DEFAULT} |" in capsys.readouterr().out
    assert cli.main(["presets", "--card", presets.DEFAULT]) == 0
    assert capsys.readouterr().out.startswith(f"# {presets.DEFAULT}")
    assert cli.main(["presets", "--card", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cadstn presets: error: unknown preset 'nope'")


@pytest.mark.slow
def test_track_without_a_bundle_uses_the_default_preset(tmp_path, cache, capsys):
    out = tmp_path / "out.jsonl"
    assert cli.main(["track", "--source", f"pngs:{REAL_FRAMES}", "--jsonl", str(out)]) == 0
    lines = [json.loads(line) for line in open(out)]
    assert len(lines) == 8 and all(len(line["joints_mm"]) == 14 for line in lines if line["found"])
    assert sum(line["found"] for line in lines) >= 1
    assert os.path.isdir(os.path.join(str(cache), "presets"))
    # --upright: auto is on for the preset (an NYU-layout bundle); off tracks the crops as cut
    joints = {}
    for choice in ("on", "off"):
        path = tmp_path / f"{choice}.jsonl"
        assert cli.main(["track", "--source", f"pngs:{REAL_FRAMES}", "--jsonl", str(path), "--upright", choice]) == 0
        joints[choice] = [json.loads(line)["joints_mm"] for line in open(path)]
    assert joints["on"] == [line["joints_mm"] for line in lines] and joints["off"] != joints["on"]


@pytest.mark.slow
def test_fine_tuning_starts_from_the_preset(packed, synth_records, tmp_path, cache):
    _, path = packed
    run = tmp_path / "run"
    argv = ["train", "--records", synth_records, "--run-dir", str(run), "--from-preset", path, "--steps", "2",
            "--batch-size", "8", "--checkpoint-every", "2", "--seq-len", "4", "--lr", "1e-12"]
    assert cli.main(argv) == 0
    start = presets.load_preset(path).model
    for stage, sub in (("spatial", "spatial_network"), ("temporal", "temporal_network")):
        trained = keras.models.load_model(run / stage / "model.keras", compile=False)
        ref = {layer.name: layer for layer in leaf_layers(get_submodel(start, sub))}
        same = [all(np.allclose(w, v, atol=1e-5) for w, v in zip(layer.get_weights(), ref[layer.name].get_weights()))
                for layer in leaf_layers(trained) if layer.name in ref]
        assert len(same) >= 5 and all(same), stage  # a learning rate of 1e-12 leaves the preset's weights
    assert not (run / "baseline").exists()  # the preset's encoder replaces the Baseline


def test_fine_tuning_refuses_records_of_another_crop_size(packed, tmp_path, capsys):
    records = tmp_path / "r" / "train"
    records.mkdir(parents=True)
    json.dump({"complete": True, "num_joints": 14, "image_size": 64, "num_records": 1, "shards": []},
              open(records / "manifest.json", "w"))
    assert cli.main(["train", "--records", str(records.parent), "--run-dir", str(tmp_path / "run"),
                     "--from-preset", packed[1]]) == 2
    assert "records of 14 joints at 64x64" in capsys.readouterr().err


@pytest.mark.slow
def test_the_recipe_makes_the_same_preset_twice(tmp_path):
    made = []
    for k in range(2):
        env = {**os.environ, "KERAS_CADSTN_CACHE": str(tmp_path / f"cache{k}")}
        out = tmp_path / f"preset{k}"
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train_preset.py"), "tiny_test", "--workdir",
                        str(tmp_path / f"work{k}"), "--out", str(out), "--no-card"], check=True, env=env,
                       capture_output=True)
        made.append({f: open(out / f, "rb").read() for f in (presets.META, presets.NETWORKS, presets.WEIGHTS)})
    assert made[0] == made[1]
