import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SMALL = 32  # crop size used by the fast tests
REAL_FRAMES = os.path.join(os.path.dirname(__file__), "data", "real_frames")  # 8 RealSense SR305 frames


def real_frames_camera():
    """The SR305's camera, from the folder's camera.json (what `cadstn track --source pngs:` reads)."""
    import json

    from keras_cadstn.camera import Camera
    with open(os.path.join(REAL_FRAMES, "camera.json")) as f:
        return Camera.from_dict(json.load(f))


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A small synthetic set in the NYU on-disk format: 2 train sequences, 1 test sequence."""
    from keras_cadstn.data.synthetic import write_synthetic_nyu
    root = str(tmp_path_factory.mktemp("synth"))
    write_synthetic_nyu(root, frames_per_sequence=40, train_sequences=2, test_sequences=1, seed=3,
                        progress=False)
    return root


@pytest.fixture(scope="session")
def synth_records(synth_root, tmp_path_factory):
    """The synthetic set converted to 32x32 TFRecords (train: 3 shards, test: 1)."""
    from keras_cadstn.data.nyu import load_nyu
    from keras_cadstn.data.tfrecord import convert_split
    out = str(tmp_path_factory.mktemp("records"))
    for split, shards in (("train", 3), ("test", 1)):
        convert_split(load_nyu(synth_root, split), os.path.join(out, split), shards=shards,
                      image_size=SMALL, progress=False)
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


TINY_NETWORK = dict(image_size=SMALL, seq_len=4, fc_units=32, lstm_units=16)


TINY_REFINER = dict(image_size=16, filters=(4, 8), fc_units=16)


def make_tiny_bundle(folder, **network):
    """An (untrained) CADSTN bundle at 32x32, T=4, NYU spec, with a 16x16 centre refiner whose
    offset is nearly zero (random weights, the last layer scaled down: an untrained refiner would
    walk the centre off the hand): for export and tracker plumbing."""
    import keras

    from keras_cadstn.config import CADSTNConfig, RefinerConfig
    from keras_cadstn.data.frames import NYU
    from keras_cadstn.models import build_cadstn, build_centre_refiner
    from keras_cadstn.models.bundle import load_bundle, save_bundle
    keras.utils.set_random_seed(5)
    config, refiner = CADSTNConfig(**{**TINY_NETWORK, **network}), RefinerConfig(**TINY_REFINER)
    centre_refiner = build_centre_refiner(refiner)
    last = centre_refiner.get_layer("offset")
    last.set_weights([w * 1e-3 for w in last.get_weights()])
    path = save_bundle(str(folder / "bundle"), build_cadstn(config=config), NYU, config, centre_refiner, refiner)
    return load_bundle(path)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """``make_tiny_bundle`` with the default network settings."""
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle"))


NETWORK_OPTIONS = {"paper": dict(centre_motion=False, gate_input="crop"),
                   "ours": dict(centre_motion=True, gate_input="predictions")}


@pytest.fixture(scope="session")
def tiny_bundles(tiny_bundle, tmp_path_factory):
    """{"paper": bundle, "ours": bundle}: the paper's temporal network and gate, and ours (centre
    motion, prediction gate), for the paths that differ (``tiny_bundle`` where it is one of them)."""
    out = {}
    for name, options in NETWORK_OPTIONS.items():
        same = all(getattr(tiny_bundle.config, k) == v for k, v in options.items())
        out[name] = tiny_bundle if same else make_tiny_bundle(tmp_path_factory.mktemp("bundle"), **options)
    return out
