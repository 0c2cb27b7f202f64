"""Training the hand detector on synthetic scenes with a person behind the hand (tools/train_detector.py
runs it)."""
from __future__ import annotations

import itertools
import os

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from tqdm.auto import tqdm

from keras_cadstn import fileio
from keras_cadstn.config import DetectorConfig, SynthConfig
from keras_cadstn.data.frames import NYU, NYU_EVAL_JOINTS
from keras_cadstn.data.synthetic import SequenceRenderer
from keras_cadstn.models.refiner import build_hand_detector
from keras_cadstn.tracking.detector import DETECTOR_PATH, HandDetector, detector_crop, load_detector
from keras_cadstn.tracking.localiser import HandLocaliser


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
    weight = y_true[:, 3]
    error = ops.sum(ops.square(y_true[:, :3] - y_pred), axis=-1)
    return ops.sum(weight * error) / (ops.sum(weight) + 1e-6)


def train_detector(out_path: str = DETECTOR_PATH, config: DetectorConfig = DetectorConfig(), sequences: int = 48,
                   frames: int = 50, steps: int = 8000, batch_size: int = 64, seed: int = 0,
                   progress: bool = True) -> HandDetector:
    """Make the examples, train ``steps`` steps (Adam 1e-3, cosine decay; offset loss x10 + hand
    cross-entropy) and write the model and its ``DetectorConfig`` atomically to ``out_path`` (+ .json)."""
    data = make_examples(sequences, frames, config, seed, progress=progress)
    print(f"[detector] {len(data['crops'])} crops ({data['hands'].mean():.0%} hand); training {steps} steps",
          flush=True)
    keras.utils.set_random_seed(seed)
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
    with fileio.atomic_path(out_path, ".keras") as tmp:
        shipped.save(tmp)
    fileio.write_json(os.path.splitext(out_path)[0] + ".json", config.to_dict())
    load_detector.cache_clear()
    return HandDetector(shipped, config)
