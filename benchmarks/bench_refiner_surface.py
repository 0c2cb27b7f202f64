"""The centre refiner's surface check (``RefinerConfig.max_behind_surface_mm``): whether to use it, and
at what limit, chosen on validation data only; the real frames looked at beside.

With the check, after each refiner pass the reference joint is kept inside the hand: where it lies more
than ``max_behind_surface_mm`` behind the surface seen at its pixel, it is put
``behind_surface_mm`` behind that surface (``refine.keep_inside_hand``). For each limit (off, and
the ``--limits`` in mm), with the refiner of a `cadstn demo` bundle:
- the localiser's validation scenes (person behind the hand, sequence seeds 3000..): the share of
  frames whose refined reference joint lies within 50 mm of the palm, and whose pose-crop centre
  (the training pre-processing's centre of mass around that joint, what the pose networks see)
  lies within 20 mm of the labelled one (that of the true palm), with the median;
- the demo's validation split: the tracker's mean joint error (Keras, localiser + refiner);
- the 8 real SR305 frames (tests/data/real_frames; not used to choose): the refined joint within
  60 mm of the annotated palm. The annotated palm is a point on the surface (the median depth at
  the annotated pixel) while the joint lies inside the hand, 12-16 mm behind it in the synthetic
  scenes.

    python benchmarks/bench_refiner_surface.py [--workdir ~/.cache/keras_cadstn/demo] [--limits 20 30 40]
"""
import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def validation_scenes(bundle, scenes: int, frames: int, seed: int = 3000) -> tuple:
    """(reference joint from the palm, pose-crop centre from the labelled one) in mm per frame of
    the validation scenes; inf where no hand was detected."""
    from keras_cadstn.data.frames import NYU_EVAL_JOINTS
    from keras_cadstn.data.synthetic import SequenceRenderer, SynthConfig
    from keras_cadstn.preprocessing import hand_center
    from keras_cadstn.refine import refine_centre
    from keras_cadstn.runtime import KerasFunction, as_refiner
    from keras_cadstn.tracking import HandLocaliser
    cam, cube, localiser = bundle.camera, np.asarray(bundle.spec.cube, float), HandLocaliser()
    refiner = as_refiner(KerasFunction(bundle.refiner))
    joint, centre = [], []
    for k in range(scenes):
        renderer = SequenceRenderer(seed + k, SynthConfig(person=True, camera=cam))
        for t in range(frames):
            depth, joints = renderer.render(t)
            palm = joints[NYU_EVAL_JOINTS[bundle.spec.reference_joint]]  # the renderer gives NYU's 36 joints
            start = localiser.detect(depth, cube, cam)
            if start is None:
                joint.append(np.inf)
                centre.append(np.inf)
                continue
            moved = refine_centre(refiner, depth, start, cube, cam, bundle.refiner_config)
            labelled = hand_center(depth, cam.xyz_to_uvd(palm), cube, cam)
            joint.append(float(np.linalg.norm(cam.uvd_to_xyz(moved) - palm)))
            centre.append(float(np.linalg.norm(cam.uvd_to_xyz(hand_center(depth, moved, cube, cam))
                                               - cam.uvd_to_xyz(labelled))))
    return np.asarray(joint), np.asarray(centre)


def real_offsets(bundle) -> np.ndarray:
    """Per real frame with a hand found (tests/data/real_frames): the x, y distance (mm) from the
    annotated palm of the detection's crop centre and of the joint refined from it, and how far
    (mm) the refined joint lies behind the palm's surface point."""
    import bench_localiser
    from keras_cadstn.tracking import HandLocaliser
    return np.asarray([(np.linalg.norm(found[:2] - palm[:2]), np.linalg.norm(moved[:2] - palm[:2]), moved[2] - palm[2])
                       for palm, found, moved in bench_localiser.real_points(HandLocaliser(), bundle)
                       if found is not None])


def main():
    import bench_localiser
    from keras_cadstn.demo import DEFAULT_WORKDIR
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default=os.path.join(DEFAULT_WORKDIR, "demo"), help="a `cadstn demo` workdir")
    p.add_argument("--limits", nargs="+", type=float, default=[20.0, 30.0, 40.0])
    p.add_argument("--scenes", type=int, default=6, help="validation scenes with a person (seeds 3000..)")
    p.add_argument("--frames", type=int, default=80)
    args = p.parse_args()

    from keras_cadstn.bundle import load_bundle
    from keras_cadstn.demo import DemoConfig, demo_splits, tracker_errors
    from keras_cadstn.tracking import HandLocaliser
    start = time.perf_counter()
    base = load_bundle(os.path.join(args.workdir, "bundle"))
    if base.refiner is None:
        raise SystemExit(f"bench_refiner_surface: error: {base.path} has no centre refiner")
    val = demo_splits(DemoConfig(workdir=args.workdir))["val"]
    labelled = tracker_errors(base, val, rows=("labelled",))["labelled"]["mean_error"]
    rows = []
    for limit in [None] + args.limits:
        bundle = base.with_refiner_settings(max_behind_surface_mm=limit)
        joint, centre = validation_scenes(bundle, args.scenes, args.frames)
        error = tracker_errors(bundle, val, rows=("localiser + refiner",))["localiser + refiner"]["mean_error"]
        _, real = bench_localiser.real_frames(HandLocaliser(), bundle)
        rows.append((limit, joint, centre, error, real))
    print(f"\nCentre refiner's surface check, {args.workdir} (validation scenes: {args.scenes} x {args.frames} "
          f"frames, seeds 3000..; labelled-centre tracker on the validation split: {labelled:.2f} mm)\n")
    print("| max behind surface (mm) | joint within 50 mm of the palm | pose-crop centre within 20 mm of the "
          "labelled one / median (mm) | tracker error, validation split (mm) | real frames: joint within 60 mm "
          "of the annotated palm / median / largest (mm) |")
    print("|---|---|---|---|---|")
    for limit, joint, centre, error, real in rows:
        print(f"| {'off' if limit is None else f'{limit:g}'} | {100 * np.mean(joint <= 50):.1f}% | "
              f"{100 * np.mean(centre <= 20):.1f}% / {np.median(centre):.1f} | {error:.2f} | "
              f"{np.sum(real <= 60)} of {len(real)} / {np.median(real):.0f} / {np.max(real):.0f} |")
    off = real_offsets(base)
    print(f"\nReal frames, check off: x, y distance from the annotated palm, median {np.median(off[:, 0]):.0f} mm "
          f"(detection) and {np.median(off[:, 1]):.0f} mm (refined); the refined joint "
          f"{off[:, 2].min():.0f}-{off[:, 2].max():.0f} mm behind the palm's surface point (median {np.median(off[:, 2]):.0f})")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
