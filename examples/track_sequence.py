"""Track a hand through a depth sequence and draw the skeletons (prediction red, labels green).

    python examples/track_sequence.py --bundle ~/.cache/keras_cadstn/demo/bundle --out track.mp4
    python examples/track_sequence.py --bundle B --data nyu:/path/to/nyu --frames 300 --out strip.png

Default input: a synthetic sequence rendered with the bundle's camera. The hand is found from the
depth alone (--centre localiser, default) or from the labels (--centre labelled, as papers evaluate).
An output ending in .mp4/.avi is a video; anything else is an image strip of every --every-th frame.
"""
import argparse
import os
import sys
import time

import numpy as np


def synthetic_frames(bundle, n, seed):
    from keras_cadstn.data.synthetic import render_reference_frames
    cam = bundle.camera
    for depth_mm, joints, ref_uvd in render_reference_frames(bundle.spec, n, seed):
        yield (depth_mm / cam.depth_unit_mm).astype(np.float32), joints, cam.uvd_to_xyz(ref_uvd)


def dataset_frames(bundle, data, split, n):
    from keras_cadstn.data.splits import load_split
    name, _, root = data.partition(":")
    frames = load_split(name, root, split)
    for f in frames.frames[:n]:
        yield frames.read_depth(f.path), f.joints_xyz, f.joints_xyz[frames.spec.reference_joint]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True)
    p.add_argument("--data", default="synthetic", help="'synthetic' or 'nyu:/path' / 'icvl:/path'")
    p.add_argument("--split", default="test")
    p.add_argument("--frames", type=int, default=96)
    p.add_argument("--seed", type=int, default=123, help="synthetic sequence seed")
    p.add_argument("--backend", choices=["keras", "tflite", "onnx"], default="keras")
    p.add_argument("--precision", choices=["float32", "float16", "dynamic_int8", "int8"], default="float32",
                   help="TFLite only: the step model's precision (exported into the cache on first use)")
    p.add_argument("--centre", choices=["localiser", "labelled"], default="localiser")
    p.add_argument("--camera", help="another sensor for the synthetic sequence: fx,fy,cx,cy,width,height,mm_per_unit "
                                    "(e.g. 300,296,165,118,320,240,1000 for a 320x240 camera storing metres)")
    p.add_argument("--out", default="track.png")
    p.add_argument("--every", type=int, default=12, help="image strip: one panel every N frames")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import cv2
    from tqdm.auto import tqdm

    from keras_cadstn.data.metrics import mean_error
    from keras_cadstn.models.bundle import load_bundle
    from keras_cadstn.tracking.drawing import crop_around, depth_to_bgr, draw_skeleton
    from keras_cadstn.tracking.tracker import HandTracker

    bundle = load_bundle(args.bundle)
    if args.camera:
        from keras_cadstn.camera import Camera
        fx, fy, cx, cy, w, h, unit = (float(v) for v in args.camera.split(","))
        bundle = bundle.with_camera(Camera(fx, fy, cx, cy, int(w), int(h), depth_unit_mm=unit))
    if args.data != "synthetic":
        from keras_cadstn.data import get_spec
        bundle = bundle.with_camera(get_spec(args.data.split(":")[0]).camera)
    frames = (synthetic_frames(bundle, args.frames, args.seed) if args.data == "synthetic"
              else dataset_frames(bundle, args.data, args.split, args.frames))
    from keras_cadstn.export.tracker import export_for_tracker
    tracker = HandTracker(bundle, backend=args.backend, precision=args.precision,
                          **export_for_tracker(bundle, args.backend, args.precision))
    cam, dataset = bundle.camera, bundle.spec.name
    video = args.out.lower().endswith((".mp4", ".avi"))
    writer, panels, gts, preds, times = None, [], [], [], []
    for i, (raw, gt_xyz, ref_xyz) in enumerate(tqdm(frames, total=args.frames, unit="frame")):
        start = time.perf_counter()
        result = tracker.update(raw, center_uvd=cam.xyz_to_uvd(ref_xyz) if args.centre == "labelled" else None)
        times.append(time.perf_counter() - start)
        image = depth_to_bgr(cam.to_mm(raw))
        draw_skeleton(image, cam.xyz_to_uvd(gt_xyz), dataset, (0, 200, 0), 1)
        if result.found:
            draw_skeleton(image, cam.xyz_to_uvd(result.joints_mm), dataset, (0, 0, 255), 2)
            gts.append(gt_xyz)
            preds.append(result.joints_mm)
        cv2.putText(image, f"{i} {result.mode}", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
        if video:
            if writer is None:
                fourcc = cv2.VideoWriter_fourcc(*("mp4v" if args.out.lower().endswith(".mp4") else "MJPG"))
                writer = cv2.VideoWriter(args.out, fourcc, 30.0, (image.shape[1], image.shape[0]))
            writer.write(image)
        elif i % args.every == 0:
            centre = cam.xyz_to_uvd(ref_xyz)
            panels.append(crop_around(image, centre, int(cam.fx * 180.0 / centre[2])))
    if writer is not None:
        writer.release()
    elif panels:
        size = max(p.shape[0] for p in panels)
        cv2.imwrite(args.out, np.hstack([cv2.resize(p, (size, size)) for p in panels]))
    ms = 1000 * np.asarray(times)
    found = len(preds)
    print(f"{args.out}: {len(ms)} frames, hand found in {found}; centre: {args.centre}; backend {args.backend} "
          f"{args.precision}; "
          f"per-frame p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms"
          + (f"; mean error {mean_error(np.asarray(gts), np.asarray(preds)):.2f} mm" if found else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
