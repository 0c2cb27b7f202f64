"""Train a shipped preset from its recipe (``keras_cadstn.config.preset(NAME)``) and pack it into
keras_cadstn/assets/presets/NAME/ with its model card.

    python tools/train_preset.py cadstn_synthetic_64 [--workdir DIR] [--out DIR] [--picture PNG]
    python tools/train_preset.py cadstn_synthetic_64 --remeasure   # the shipped preset's card, re-measured
    python tools/train_preset.py cadstn_synthetic_128     # the same at 128x128: for a GPU (untrained here)

Every stage of the main job (synthetic data, records, the five CADSTN stages, the centre refiner,
the low-rank step), then the hand detector, then the pack and the card's measurements. Seeded, with
deterministic ops: the same command on the same machine makes the same files. Killed at any point,
the same command resumes (each stage from its last backup, finished stages loaded; the detector,
a few minutes, restarts). About 50 minutes on 2 CPU cores for the 64x64 preset; tiny_test takes a minute.
"""
import argparse
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_cadstn import presets  # noqa: E402
from keras_cadstn.config import PRESET_NAMES, REAL_FRAMES, preset  # noqa: E402
from keras_cadstn.data.real_frames import read_annotated_frames  # noqa: E402
from keras_cadstn.demo import demo_splits, prepare_records, run_demo  # noqa: E402
from keras_cadstn.export.accuracy import tracker_errors  # noqa: E402
from keras_cadstn.export.tracker import export_for_tracker  # noqa: E402
from keras_cadstn.models.bundle import load_bundle  # noqa: E402
from keras_cadstn.tracking.detector import DETECTOR_FILE  # noqa: E402
from keras_cadstn.tracking.drawing import crop_around, depth_to_bgr, draw_skeleton  # noqa: E402
from keras_cadstn.tracking.evaluate import real_frame_errors, summarise_real_frames  # noqa: E402
from keras_cadstn.tracking.tracker import HandTracker  # noqa: E402
from keras_cadstn.training.detector import train_detector  # noqa: E402

LATENCY_FRAMES = 300  # test frames timed per backend, after 20 not timed


def train(recipe) -> str:
    """The float32 bundle of ``recipe`` with its hand detector inside, trained into its workdir (or
    found there)."""
    tf.config.experimental.enable_op_determinism()
    bundle = run_demo(recipe.job, export=False)["bundle"]
    detector = os.path.join(recipe.job.workdir, "detector", "hand_detector.keras")
    if not os.path.isfile(detector):
        train_detector(detector, sequences=recipe.detector_sequences, frames=recipe.detector_frames,
                       steps=recipe.detector_steps, seed=recipe.detector_seed)
    for src, dst in ((detector, DETECTOR_FILE), (os.path.splitext(detector)[0] + ".json", "detector.json")):
        shutil.copy(src, os.path.join(bundle, dst))  # the bundle tracks with the detector it ships
    return bundle


def real_frames(bundle, refine=None, upright=None) -> dict:
    frames = read_annotated_frames(REAL_FRAMES)
    tracker = HandTracker(bundle.with_camera(frames[0].camera), refine=refine, upright=upright)
    return {c: summarise_real_frames([real_frame_errors(tracker, f, c) for f in frames]) for c in ("localiser", "palm")}


def latency_ms(bundle, split, backend: str, precision: str = "float32") -> float:
    """Median time of ``HandTracker.update`` per frame over the test split's first frames (the first
    20 not timed)."""
    tracker = HandTracker(bundle.with_camera(split.spec.camera), backend, precision,
                          **export_for_tracker(bundle, backend, precision))
    times = []
    for i, frame in enumerate(split.frames[:LATENCY_FRAMES + 20]):
        raw = split.read_depth(frame.path)
        t = time.perf_counter()
        tracker.update(raw)
        if i >= 20:
            times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def picture(bundle, path: str, half: int = 110) -> str:
    """The real frames tracked label-free, each cut around its annotated palm: the tracker's joints in
    red, the annotated fingertips and wrist in green; a 2 x 4 grid written to ``path`` (PNG)."""
    frames = read_annotated_frames(REAL_FRAMES)
    tracker = HandTracker(bundle.with_camera(frames[0].camera))
    tiles = []
    for frame in frames:
        tracker.reset()
        result = tracker.update(frame.raw)
        image = depth_to_bgr(frame.depth_mm, frame.palm_depth_mm)
        if result.found:
            draw_skeleton(image, frame.camera.xyz_to_uvd(result.joints_mm), thickness=1)
        for uv in frame.joints_uv.values():
            cv2.circle(image, tuple(int(round(x)) for x in uv), 3, (0, 200, 0), -1, cv2.LINE_AA)
        tile = crop_around(image, frame.palm_uv, half)
        label = os.path.splitext(frame.name)[0]
        cv2.putText(tile, label if result.found else label + ": no hand", (4, 14), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % 4)
    grid = np.vstack([np.hstack(tiles[i:i + 4]) for i in range(0, len(tiles), 4)])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, grid):
        raise OSError(f"{path}: could not write the picture")
    return path


def measure(recipe, source: str | None, out: str) -> dict:
    """The card's figures: the preset against the float32 bundle it was packed from (the storage's
    cost; ``source`` None: kept from the card packed with it), its tracker (as ``cadstn track``
    runs it, and without the upright turn) on the synthetic test split and on the annotated real
    frames, its latency."""
    bundle = presets.load_preset(out)
    test = demo_splits(recipe.job)["test"]
    synthetic = tracker_errors(bundle, test)
    real, refined = real_frames(bundle), real_frames(bundle, refine=True) if bundle.refiner is not None else None
    rows = ("labelled", "localiser")  # the preset's own figures above serve as its float16 row
    full = load_bundle(source) if source is not None else None
    storage = presets.card_figures(out)["storage"] if full is None else {
        "float32": {"synthetic_test": tracker_errors(full, test, rows=rows), "real_frames": real_frames(full)["localiser"]},
        "float16": {"synthetic_test": {r: synthetic[r] for r in rows}, "real_frames": real["localiser"]}}
    with np.load(os.path.join(out, presets.WEIGHTS)) as npz:
        float32_mb = sum(npz[k].size for k in npz.files) * 4 / 1e6
    return {"name": recipe.name, "version": recipe.version, "size_mb": presets.preset_size_mb(out),
            "float32_mb": float32_mb, "storage": storage,
            "synthetic_test": {row: r["mean_error"] for row, r in synthetic.items()},
            "synthetic_no_hand_frames": {row: r["no_hand_frames"] for row, r in synthetic.items()},
            "synthetic_frames": len(test.frames),
            "real_frames": {"label-free": real["localiser"], "annotated palm": real["palm"],
                            **({"label-free + refiner": refined["localiser"]} if refined else {}),
                            "label-free, upright off": real_frames(bundle, upright=False)["localiser"]},
            "latency_ms": {"keras": latency_ms(bundle, test, "keras"),
                           "tflite dynamic_int8": latency_ms(bundle, test, "tflite", "dynamic_int8")},
            "cpu": f"{os.cpu_count()} cores"}


def refiner_note(real: dict) -> str:
    if "label-free + refiner" not in real:
        return "No centre refiner is shipped."
    on, off = real["label-free + refiner"], real["label-free"]
    helps = on["found"] > off["found"] or (on["found"] == off["found"] and on["joint_median_mm"] < off["joint_median_mm"])
    return (f"The centre refiner is shipped but off by default (`--refiner on`): on the real frames it "
            f"{'helped' if helps else 'did not help'} (hand found {on['found']} against {off['found']} of "
            f"{off['frames']}, joint median {on['joint_median_mm']:.1f} against {off['joint_median_mm']:.1f} mm).")


def card(recipe, f: dict) -> str:
    """MODEL_CARD.md from the recipe and the measured figures."""
    job, name = recipe.job, recipe.name
    st, real = f["storage"], f["real_frames"]
    cost = {k: st["float16"]["synthetic_test"][k]["mean_error"] - st["float32"]["synthetic_test"][k]["mean_error"]
            for k in ("labelled", "localiser")}
    real_cost = st["float16"]["real_frames"]["joint_median_mm"] - st["float32"]["real_frames"]["joint_median_mm"]
    steps = ", ".join(f"{k} {v}" for k, v in job.train.steps.items())
    synth_rows = "\n".join(f"| {row} | {err:.2f} | {f['synthetic_no_hand_frames'][row]} |"
                           for row, err in f["synthetic_test"].items())
    real_rows = "\n".join(f"| {row} | {r['found']} of {r['frames']} | {r['centre_median_mm']:.0f} | "
                          f"{r['joint_median_mm']:.1f} | {r['joint_mean_mm']:.1f} |" for row, r in real.items())
    refiner = "label-free + refiner" in real
    turned = f", and every training crop turned by a random angle within +-{job.train.rotation:g} degrees" \
        if job.train.rotation else ""
    return f"""# {name} (version {recipe.version})

CADSTN (spatial, temporal and fusion networks, {job.image_size}x{job.image_size} crops, clips of T={job.seq_len}),
its hand detector{" and its centre refiner" if refiner else ""}, trained only on synthetic depth hands that keras_cadstn
generates: no NYU, ICVL or other recorded data inside.

    bundle = keras_cadstn.load_preset("{name}")          # a tracker bundle
    cadstn track --source pngs:DIR --jsonl out.jsonl      # the default preset: no --bundle needed
    cadstn train --from-preset {name} --records R --run-dir D   # fine-tune on your labelled frames

## Trained on
- `python tools/train_preset.py {name}` with keras_cadstn {presets.package_version()} (ops deterministic,
  every seed fixed: on one machine the command writes the same preset.json, networks.json and weights.npz).
- Synthetic world: hand `{job.hand}`, poses `{job.poses}`, sensor `{job.sensor}`, events {"on" if job.synth_events else "off"};
  NYU's Kinect camera, the hand 450-750 mm from it; right hands only.
- {job.train_sequences} training and {job.val_sequences} validation sequences of {job.frames_per_sequence} frames
  ({job.test_sequences} more for the test split below); the centre refiner also on {job.refiner_person_sequences} scenes
  of {job.refiner_person_frames} frames with a person behind the hand; the detector on {recipe.detector_sequences} scenes
  of {recipe.detector_frames} frames ({recipe.detector_steps} steps).
- Steps: {steps}; batch {job.train.batch_size} frames, Adam {job.train.learning_rate:g}, cosine decay.
- Crops centred on the centre of mass in the cube x {job.centre_scale:g} (1: the paper's whole cube); the paper's
  rotation and flip copies{turned}.

## Storage
Weights in float16, each distinct array once: {f['size_mb']:.1f} MB in all ({f['float32_mb']:.1f} MB in float32,
beyond what the package may ship). What float16 costs, measured against the float32 bundle it was packed from
when it was packed (float16 minus float32): {cost['labelled']:+.2f} mm on the synthetic test split from the labelled centre,
{cost['localiser']:+.2f} mm label-free, {real_cost:+.1f} mm joint median on the real frames.

## Accuracy
The tracker as `cadstn track` runs it: each crop turned so the hand's axis lies on a crop axis (`--upright on`),
the centre refiner off unless a row says so. Synthetic test split ({f['synthetic_frames']} raw frames, each sequence streamed through the tracker):

| hand centre from | mean joint error (mm) | frames without a hand |
|---|---|---|
{synth_rows}

Real depth frames (`tests/data/real_frames`: 8 RealSense SR305 frames of one person, fingertips and wrist
annotated by eye; image error in mm at the palm's depth; found: the crop centre within 40 mm of the palm):

| hand centre from | hand found | centre to palm, median (mm) | joint error, median (mm) | mean (mm) |
|---|---|---|---|---|
{real_rows}

## Speed
`HandTracker.update` per frame, median over {min(LATENCY_FRAMES, f['synthetic_frames'] - 20)} test frames (detection, crop, network, joints), on
{f['cpu']} of this machine: Keras {f['latency_ms']['keras']:.1f} ms; TFLite dynamic-range int8
{f['latency_ms']['tflite dynamic_int8']:.1f} ms (`--backend tflite --precision dynamic_int8`).

Every figure above: `python tools/train_preset.py {name}` (it re-measures a trained workdir);
the real-frame table also: `python benchmarks/bench_real.py --preset {name}`.

## Limits
- Trained on synthetic hands only: compare its real-frame and synthetic figures above before trusting it on a
  camera; it is a way to try the pipeline on your sensor and a start for fine-tuning on labelled frames of it.
- Right hands; one hand in view; 450-750 mm from the sensor; sensors tried: NYU's Kinect geometry (synthetic),
  RealSense SR305 (the 8 real frames).
- {refiner_note(real)}

## Licences
Everything inside was made by keras_cadstn from data it generated itself (no third-party model, mesh or
dataset): the weights carry the package's own licence.
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=PRESET_NAMES)
    p.add_argument("--workdir", help="where the data and the runs go (default: the cache folder)")
    p.add_argument("--out", help="the preset folder to write (default: keras_cadstn/assets/presets/NAME)")
    p.add_argument("--no-card", action="store_true", help="pack without measuring (the card is not written)")
    p.add_argument("--remeasure", action="store_true", help="no training: measure the packed preset again with this "
                   "version's tracker and rewrite its card (the float16 cost kept from when it was packed)")
    p.add_argument("--picture", help="also draw the real frames tracked by the preset into this PNG "
                                     "(the README's: docs/images/preset_real_frames.png)")
    args = p.parse_args(argv)
    start = time.time()
    recipe = preset(args.name, args.workdir)
    if args.remeasure:  # the synthetic test split is generated into the workdir where it is not there
        out, source = args.out or presets.shipped_path(args.name), None
        prepare_records(recipe.job)
    else:
        source = train(recipe)
        out = presets.write_preset(args.out or presets.shipped_path(args.name), load_bundle(source), recipe)
    if not args.no_card:
        figures = measure(recipe, source, out)
        presets.write_card(out, card(recipe, figures), figures)
    if args.picture:
        print(f"picture: {picture(presets.load_preset(out), args.picture)}")
    print(f"preset {args.name} written to {out} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
