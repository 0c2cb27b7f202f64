"""Learned hand detection (ours; DeepPrior++'s refinement idea turned into a detector).

With a person behind the hand, the geometric localiser (``tracking.HandLocaliser``: the nearest
blobs, each one's arm end and the largest inscribed circle) proposes the right blob but not always
the palm: where the forearm comes nearer to the camera than the hand, or an object touches it, its
point lands 150-250 mm away, and a palm-sized part of the body or of an object passes for a hand.
The detector (``models.build_hand_detector``: the centre refiner's network with a second output)
looks at a 32x32 crop of a 300 mm cube around each proposal, moves it by the regressed offset to the
palm a few times, and says how likely a hand is at the point it ends on; the most likely point
above ``DetectorConfig.threshold`` is the palm, and without one there is no hand.

It is trained on synthetic scenes (``SynthConfig(person=True)`` and the main job's scenes with
occluders) with crops around the localiser's proposals, around the palm moved by a normal offset, and
around random pixels, in frames with and without the hand, each crop also rotated by a multiple of
90 degrees and mirrored (real arms come from every side: without this, two of the eight real
RealSense frames, an arm raised above the head with the hand hanging down, were lost). The package
ships one trained with ``python tools/train_detector.py``; crops are metric, so it serves any camera.
"""
from __future__ import annotations

import functools
import itertools
import json
import os

import numpy as np

from keras_cadstn import atomic
from keras_cadstn.errors import ConfigError
from keras_cadstn.models.config import DetectorConfig
from keras_cadstn.refine import move_centre, refiner_crop

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
DETECTOR_PATH = os.path.join(ASSETS, "hand_detector.keras")  # its DetectorConfig: the same name, .json


def detector_crop(depth_mm, centre_uvd, camera, config: DetectorConfig) -> np.ndarray:
    """(S, S, 1): the normalised crop of a ``cube_mm`` cube around ``centre_uvd``."""
    return refiner_crop(depth_mm, centre_uvd, np.full(3, config.cube_mm), camera, config)


class HandDetector:
    """``detector(depth_mm, camera, proposals)`` -> (palm uvd, hand probability) or None.

    ``proposals``: candidate palm points (uvd), e.g. ``HandLocaliser.palm_candidates``."""

    def __init__(self, model, config: DetectorConfig = DetectorConfig()):
        from keras_cadstn.runtime import KerasFunction
        self.model, self.config = model, config
        self.run = KerasFunction(model)

    def predict(self, crops: np.ndarray) -> tuple:
        """crops (N, S, S, 1) -> (offsets (N, 3), hand probabilities (N,))."""
        outputs = self.run(crops.astype(np.float32))
        return (np.asarray(outputs["offset"], np.float64),
                1.0 / (1.0 + np.exp(-np.asarray(outputs["hand"], np.float64)[:, 0])))

    def __call__(self, depth_mm, camera, proposals) -> tuple | None:
        cfg = self.config
        cube = np.full(3, cfg.cube_mm)
        points = [np.asarray(p, np.float64) for p in proposals[:cfg.max_candidates]]
        if not points:
            return None
        for _ in range(cfg.iterations):
            offsets, _ = self.predict(np.stack([detector_crop(depth_mm, p, camera, cfg) for p in points]))
            moved = [move_centre(p, o, cube, camera) for p, o in zip(points, offsets)]
            # a step to a point that is not finite or lies behind the camera is not taken
            points = [m if np.all(np.isfinite(m)) and m[2] > 0 else p for p, m in zip(points, moved)]
        _, hand = self.predict(np.stack([detector_crop(depth_mm, p, camera, cfg) for p in points]))
        best = int(np.argmax(hand))
        return (points[best], float(hand[best])) if hand[best] >= cfg.threshold else None


@functools.lru_cache(maxsize=4)
def load_detector(path: str = DETECTOR_PATH) -> HandDetector:
    """The trained detector at ``path`` (default: the one shipped with the package), loaded once."""
    from keras_cadstn.bundle import load_keras_model
    settings = os.path.splitext(path)[0] + ".json"
    for needed in (path, settings):
        if not os.path.isfile(needed):
            raise ConfigError(f"no hand detector at {needed}: train one with `python tools/train_detector.py "
                              f"--out {path}` or use HandLocaliser(detector_path=None) (geometric detection)")
    with open(settings) as f:
        config = DetectorConfig.from_dict(json.load(f))
    model = load_keras_model(path, compile=False)
    if tuple(model.input.shape[1:]) != (config.image_size, config.image_size, 1):
        raise ConfigError(f"{path}: input {tuple(model.input.shape[1:])} does not match {settings} "
                          f"(image_size {config.image_size})")
    return HandDetector(model, config)


# ----------------------------------------------------------------------------- training

def rotate_example(crop: np.ndarray, offset: np.ndarray, quarter_turns: int, mirror: bool) -> tuple:
    """The crop (S, S, 1) mirrored left-right (``mirror``) then turned by ``quarter_turns`` x 90
    degrees counterclockwise, and its xyz offset moved with it (x along columns, y along rows;
    a counterclockwise turn maps (x, y) to (y, -x)); depth is unchanged."""
    image, (x, y, z) = crop[:, :, 0], offset
    if mirror:
        image, x = image[:, ::-1], -x
    for _ in range(quarter_turns % 4):
        image, x, y = np.rot90(image), y, -x
    return np.ascontiguousarray(image)[:, :, None], np.array([x, y, z], offset.dtype)


def scene_centres(depth_mm, palm_xyz, camera, localiser, rng, perturbed: int = 4, random_pixels: int = 2) -> list:
    """Centres (uvd) to cut one frame's training crops around: the localiser's proposals, the palm
    moved by a normal offset (sd 50 mm, at most 250 mm: proposals lie up to ~250 mm off) when the
    hand is in view (``palm_xyz``), and random pixels with depth (body, objects, wall)."""
    proposals, _ = localiser.palm_candidates(depth_mm, camera)
    centres = [np.asarray(c, np.float64) for c, _ in itertools.islice(proposals, 3)]
    if palm_xyz is not None:
        for _ in range(perturbed):
            offset = rng.normal(0.0, 50.0, 3)
            offset *= min(1.0, 250.0 / max(np.linalg.norm(offset), 1e-9))
            if palm_xyz[2] + offset[2] > 0:
                centres.append(camera.xyz_to_uvd(palm_xyz + offset))
    vs, us = np.nonzero((depth_mm > localiser.band_mm[0]) & (depth_mm < localiser.band_mm[1]))
    for i in rng.choice(len(vs), min(random_pixels, len(vs)), replace=False) if len(vs) else []:
        centres.append(np.array([us[i], vs[i], depth_mm[vs[i], us[i]]], np.float64))
    return centres


def make_examples(sequences: int, frames: int, config: DetectorConfig = DetectorConfig(), seed: int = 0,
                  person_share: float = 2 / 3, progress: bool = True) -> dict:
    """Crops, offsets to the palm (cube-normalised), offset weights and hand labels from ``sequences``
    synthetic sequences of ``frames`` frames (seeds ``seed``..; a share ``person_share`` with a
    person behind the hand, the rest the main job's scenes with occluders), each frame once with the
    hand and once without; then every crop once more, turned and mirrored at random."""
    from tqdm.auto import tqdm

    from keras_cadstn.data.frames import NYU, NYU_EVAL_JOINTS
    from keras_cadstn.data.synthetic import SequenceRenderer, SynthConfig
    from keras_cadstn.tracking import HandLocaliser
    localiser, rng = HandLocaliser(detector_path=None), np.random.default_rng([seed, 7])
    palm_index = NYU_EVAL_JOINTS[NYU.reference_joint]  # the palm centre in the renderer's 36-joint layout
    crops, offsets, weights, hands = [], [], [], []
    n_person = int(round(sequences * person_share))
    for k in tqdm(range(sequences), desc="detector crops", unit="sequence", disable=not progress):
        synth = SynthConfig(person=True) if k < n_person else SynthConfig(events=True)
        renderer = SequenceRenderer(seed + k, synth)
        camera = synth.camera
        for t in range(frames):
            for hand_in_view in (True, False):
                depth, joints = renderer.render(t, hand=hand_in_view)
                palm = joints[palm_index] if hand_in_view else None
                for centre in scene_centres(depth, palm, camera, localiser, rng):
                    if centre[2] <= 0:
                        continue
                    crops.append(detector_crop(depth, centre, camera, config).astype(np.float16))
                    if palm is None:
                        offsets.append(np.zeros(3)), weights.append(0.0), hands.append(0.0)
                        continue
                    delta = palm - camera.uvd_to_xyz(centre)
                    distance = np.linalg.norm(delta)
                    offsets.append(delta / (config.cube_mm / 2.0))
                    weights.append(float(distance <= config.offset_radius_mm))
                    hands.append(float(distance <= config.hand_radius_mm))
    turned = [rotate_example(c, o, int(rng.integers(4)), bool(rng.integers(2))) for c, o in zip(crops, offsets)]
    return {"crops": np.stack(crops + [c for c, _ in turned]).astype(np.float16),
            "offsets": np.asarray(offsets + [o for _, o in turned], np.float32),
            "weights": np.asarray(weights * 2, np.float32), "hands": np.asarray(hands * 2, np.float32)}


def masked_offset_loss(y_true, y_pred):
    """Squared offset error where the palm is near enough to learn it: ``y_true`` = (offset xyz, weight)."""
    from keras import ops
    weight = y_true[:, 3]
    error = ops.sum(ops.square(y_true[:, :3] - y_pred), axis=-1)
    return ops.sum(weight * error) / (ops.sum(weight) + 1e-6)


def train_detector(out_path: str = DETECTOR_PATH, config: DetectorConfig = DetectorConfig(), sequences: int = 48,
                   frames: int = 50, steps: int = 8000, batch_size: int = 64, seed: int = 0,
                   progress: bool = True) -> HandDetector:
    """Make the examples, train ``steps`` steps (Adam 1e-3, cosine decay; offset loss x10 + hand
    cross-entropy) and write the model and its ``DetectorConfig`` atomically to ``out_path`` (+ .json)."""
    import keras
    import tensorflow as tf
    data = make_examples(sequences, frames, config, seed, progress=progress)
    print(f"[detector] {len(data['crops'])} crops ({data['hands'].mean():.0%} hand); training {steps} steps",
          flush=True)
    keras.utils.set_random_seed(seed)
    from keras_cadstn.models.refiner import build_hand_detector
    model = build_hand_detector(config)
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, steps)),
                  loss={"offset": masked_offset_loss, "hand": keras.losses.BinaryCrossentropy(from_logits=True)},
                  loss_weights={"offset": 10.0, "hand": 1.0})
    targets = {"offset": np.concatenate([data["offsets"], data["weights"][:, None]], axis=1),
               "hand": data["hands"][:, None]}
    ds = (tf.data.Dataset.from_tensor_slices((data["crops"].astype(np.float32), targets))
          .shuffle(len(data["crops"]), seed=seed).repeat().batch(batch_size).prefetch(tf.data.AUTOTUNE))
    epochs = 10
    model.fit(ds, steps_per_epoch=max(1, steps // epochs), epochs=epochs, verbose=1 if progress else 0)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    shipped = build_hand_detector(config)  # the weights alone: no optimizer state in the file
    shipped.set_weights(model.get_weights())
    with atomic.atomic_path(out_path, ".keras") as tmp:
        shipped.save(tmp)
    atomic.write_json(os.path.splitext(out_path)[0] + ".json", config.to_dict())
    load_detector.cache_clear()
    return HandDetector(shipped, config)
