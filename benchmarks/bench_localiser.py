"""Label-free hand detection on scenes with a person behind the hand (issue: real scenes).

Renders synthetic sequences with a torso, head and arms 150-400 mm behind the hand (some with the
other arm raised, some with an object beside the hand at its depth or nearer: ``SynthConfig(person=
True)``), runs ``HandLocaliser`` frame by frame (tracking from its own previous centre: without a pose
network, where ``HandTracker`` starts from the reference joint its networks predicted) and counts the frames whose
palm is found within 50 mm of the true one, and how far the crop centres lie; then the same scenes
with the hand taken out of view, where the right answer is "no hand"; then the real RealSense
frames in tests/data/real_frames (within 60 mm of the annotated palm).

Run: python benchmarks/bench_localiser.py [--sequences 12 --frames 80 --seed 1000]
         [--detectors geometric learned] [--bundle B [--refiner MODEL.keras]]
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

REAL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "real_frames")


def synthetic_scenes(args, localiser, bundle=None):
    """Per frame: the palm found (``find_palm``) against the true palm; the tracker's crop centre
    (``track`` from its previous centre) and the labelled crop centre (the training pre-processing's centre
    of mass around the true palm) against the true palm; the tracker's crop centre against the
    labelled one (what the networks were trained on); with a ``bundle`` that has a centre refiner,
    its reference joint refined from this frame's detection (as HandTracker starts) against the true
    palm. Distances in mm, inf = no hand reported."""
    from keras_cadstn.camera import NYU_CAMERA
    from keras_cadstn.config import SynthConfig
    from keras_cadstn.data.frames import NYU
    from keras_cadstn.data.preprocessing import hand_center
    from keras_cadstn.data.synthetic import SequenceRenderer
    from keras_cadstn.tracking.refiner import refine_centre
    from keras_cadstn.tracking.runtime import KerasFunction, as_refiner
    cube, cam = np.asarray(NYU.cube, float), NYU_CAMERA
    rows, no_hand_says_hand = [], 0
    refiner = as_refiner(KerasFunction(bundle.refiner)) if bundle is not None else None

    def distance(uvd, xyz):
        return np.inf if uvd is None else float(np.linalg.norm(cam.uvd_to_xyz(uvd) - xyz))
    for k in range(args.sequences):
        renderer = SequenceRenderer(args.seed + k, SynthConfig(person=True))
        person = renderer.person
        kind = ("raised arm" if person.raised else "arm down") + (", object beside" if person.furniture else "")
        previous = None
        for t in range(args.frames):
            depth, joints = renderer.render(t)
            palm = joints[32]
            found = localiser.find_palm(depth, cam)
            previous, _ = localiser.track(depth, previous, cube, cam)
            labelled = hand_center(depth, cam.xyz_to_uvd(palm), cube, cam)
            row = (kind, distance(None if found is None else found[0], palm), distance(previous, palm),
                   distance(labelled, palm), distance(previous, cam.uvd_to_xyz(labelled)))
            if refiner is not None:
                start = localiser.centre_from_palm(depth, found, cube, cam)  # = detect, without finding again
                row += (np.inf if start is None else
                        distance(refine_centre(refiner, depth, start, cube, cam, bundle.refiner_config), palm),)
            rows.append(row)
            empty, _ = renderer.render(t, hand=False)
            no_hand_says_hand += localiser.find_palm(empty, cam) is not None
    return rows, no_hand_says_hand


def real_points(localiser, bundle=None) -> list:
    """Per real frame: (annotated palm, the detection's crop centre, the reference joint the
    bundle's centre refiner moves it to), xyz in mm, None where there is no hand or no refiner.
    The annotated palm is its pixel at the median depth of the valid pixels around it (a point on
    the palm's surface)."""
    import cv2

    from keras_cadstn.tracking.refiner import refine_centre
    from keras_cadstn.tracking.runtime import KerasFunction, as_refiner
    from keras_cadstn.tracking.sources import PngFolderSource
    cam = PngFolderSource(REAL).camera  # the folder's camera.json
    refiner = as_refiner(KerasFunction(bundle.refiner)) if bundle is not None else None
    cube = np.array([300.0, 300.0, 300.0])
    points = []
    for line in open(os.path.join(REAL, "palms.tsv")).read().splitlines()[1:]:
        name, u, v = line.split()
        depth = cam.to_mm(cv2.imread(os.path.join(REAL, name), cv2.IMREAD_UNCHANGED))
        u, v = float(u), float(v)
        window = depth[int(v) - 5:int(v) + 6, int(u) - 5:int(u) + 6]
        palm = cam.uvd_to_xyz([u, v, np.median(window[window > 0])])
        found = localiser.detect(depth, cube, cam)
        moved = (refine_centre(refiner, depth, found, cube, cam, bundle.refiner_config)
                 if refiner is not None and found is not None else None)
        points.append((palm, None if found is None else cam.uvd_to_xyz(found),
                       None if moved is None else cam.uvd_to_xyz(moved)))
    return points


def real_frames(localiser, bundle=None):
    """Per real frame: the detection's crop centre from the annotated palm (mm, inf = no hand) and,
    with a ``bundle`` that has a centre refiner, the reference joint refined from it (else None)."""
    points = real_points(localiser, bundle)

    def distances(which):
        return np.asarray([np.inf if p[which] is None else float(np.linalg.norm(p[which] - p[0])) for p in points])
    return distances(1), (distances(2) if bundle is not None else None)


def main():
    p = common.parser(__doc__)
    p.add_argument("--sequences", type=int, default=12)
    p.add_argument("--frames", type=int, default=80)
    p.add_argument("--seed", type=int, default=1000, help="first sequence seed (the demo's data use 0.., the "
                   "detector's training data 2000..; 3000.. is where its settings were chosen)")
    p.add_argument("--detectors", nargs="+", default=["geometric", "learned"],
                   help="'geometric' (HandLocaliser(detector_path=None)), 'learned' (the shipped detector) or a "
                        "path to another trained detector")
    p.add_argument("--bundle", help="also move each frame's detection with this bundle's centre refiner "
                                    "(e.g. the `cadstn demo` bundle) and measure the refined joint")
    p.add_argument("--refiner", help="with --bundle: this centre refiner (a model.keras, e.g. one that "
                                     "bench_refiner_scenes.py trained) instead of the bundle's")
    common.run("bench_localiser", run, p)


def run(args):
    from keras_cadstn.tracking.localiser import HandLocaliser
    bundle = None
    if args.bundle:
        from keras_cadstn.models.bundle import load_bundle
        bundle = load_bundle(args.bundle)
        if args.refiner:
            import dataclasses

            import keras
            if not os.path.isfile(args.refiner):
                common.fail(f"no refiner model at {args.refiner}")
            bundle = dataclasses.replace(bundle, refiner=keras.models.load_model(args.refiner, compile=False))
        if bundle.refiner is None:
            common.fail(f"{args.bundle} has no centre refiner")
    elif args.refiner:
        common.fail("--refiner needs --bundle (its refiner settings and camera)")
    start = time.time()
    for name in args.detectors:
        path = {"geometric": None, "learned": HandLocaliser.detector_path}.get(name, name)
        localiser = HandLocaliser(detector_path=path)
        rows, false_hands = synthetic_scenes(args, localiser, bundle)
        real, real_refined = real_frames(localiser, bundle)
        n = len(rows)
        print(f"\n{name} detection. Share within 50 mm / median (mm) / frames with no hand reported\n")
        refined = " refined reference joint (bundle's refiner from the detection), from the true palm |" if bundle else ""
        print("| scenes | frames | palm found, from the true palm | tracker's crop centre, from the true palm | "
              "labelled crop centre, from the true palm | tracker's crop centre, from the labelled one |" + refined)
        print("|---|---|---|---|---|---|" + ("---|" if bundle else ""))
        kinds = sorted({r[0] for r in rows}) + ["all"]
        for kind in kinds:
            sel = [r for r in rows if kind in ("all", r[0])]
            cells = []
            for col in range(1, len(sel[0])):
                e = np.asarray([r[col] for r in sel])
                cells.append(f"{np.mean(e <= 50):.1%} / {np.median(e):.0f} / {np.isinf(e).sum()}")
            print(f"| person behind, {kind} | {len(sel)} | " + " | ".join(cells) + " |")
        print(f"\n{name}: same scenes with the hand out of view: no hand reported in {n - false_hands} of {n} "
              f"({(n - false_hands) / n:.1%}).")
        print(f"{name}: real SR305 frames (tests/data/real_frames, detection): within 60 mm of the annotated palm in "
              f"{np.sum(real <= 60)} of {len(real)}, median {np.median(real):.0f} mm, largest {np.max(real):.0f} mm.")
        if real_refined is not None:
            print(f"{name}: real SR305 frames, reference joint refined from the detection: within 60 mm of the "
                  f"annotated palm in {np.sum(real_refined <= 60)} of {len(real_refined)}, median "
                  f"{np.median(real_refined):.0f} mm, largest {np.max(real_refined):.0f} mm.")
    print(f"\n{args.sequences} sequences x {args.frames} frames, seeds {args.seed}..{args.seed + args.sequences - 1}; "
          f"{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
