"""Whole-tracker latency per frame (localiser, centre refiner, crop, network, mm), per backend, against
the naive way.

The naive way keeps the last T crops and re-runs the clip CADSTN on the whole window every frame
(what a clip model needs without a streaming step). Frames are rendered beforehand (not timed).
Run: python benchmarks/bench_tracking.py [--bundle B] [--image-size 128] [--frames 200] [--threads 2]
         [--fc-rank 16] [--rounds 3]
Without --bundle a freshly initialised CADSTN of the requested size, with a freshly initialised
centre refiner (the demo's: 32x32; two passes from a detection, one from the last frame's joint),
is timed (weights do not change the cost of a network). Each tracker runs over the frames
``--rounds`` times, the trackers in turn; percentiles are over all its frames. The refiner's last
layer is zeroed: a random refiner walks the centre off the hand, which sends every other frame back
through the localiser and a second refinement, a path a trained refiner does not take. The paper's
configuration is --image-size 128 (T=16). The columns "step" and "refiner" time the networks alone
(one call of the pose step; the refiner's passes of a tracked frame), so what the rest of the frame
costs can be read off. ``--fc-rank R`` adds TFLite dynamic_int8 and int8 rows
with the bundle's step of fc rank R (``bundle.add_low_rank_step``; the fresh bundle's is fitted to
synthetic hand crops; what the rank does to the error: benchmarks/bench_low_rank.py), and the
dynamic_int8 one again with two refiner passes from the last frame's joint instead of
``RefinerConfig.tracked_iterations``, and again with the last centre-of-mass pass around the refined
joint on every pixel instead of every ``HandTracker.centre_step``-th; 0: none.
"""
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def frames(bundle, n):
    from keras_cadstn.config import SynthConfig
    from keras_cadstn.data.synthetic import SequenceRenderer
    renderer = SequenceRenderer(123, SynthConfig(camera=bundle.camera))
    return [renderer.render(t)[0].astype(np.uint16) for t in range(n)]


def time_tracker(tracker, depth_frames, warmup=5):
    for d in depth_frames[:warmup]:
        tracker.update(d)
    tracker.reset()
    times = []
    for d in depth_frames:
        start = time.perf_counter()
        tracker.update(d)
        times.append(time.perf_counter() - start)
    return 1000 * np.asarray(times)


class NaiveWindowTracker:
    """Same pre-processing; the clip model re-run on the last T crops every frame."""

    def __init__(self, bundle):
        import tensorflow as tf

        from keras_cadstn.tracking.localiser import HandLocaliser
        self.bundle, self.localiser = bundle, HandLocaliser()
        model = bundle.model
        self.fn = tf.function(lambda clip: model(clip, training=False))
        self.reset()

    def reset(self):
        self.window, self.previous = [], None

    def update(self, depth):
        from keras_cadstn.data.preprocessing import crop_and_normalize
        b = self.bundle
        depth_mm = b.camera.to_mm(depth)
        cube = np.asarray(b.spec.cube)
        centre, _ = self.localiser.track(depth_mm, self.previous, cube, b.camera)
        crop, _ = crop_and_normalize(depth_mm, centre, cube, b.camera, b.image_size)
        self.previous = centre
        self.window = (self.window + [crop])[-b.seq_len:]
        clip = np.stack(self.window + [self.window[-1]] * (b.seq_len - len(self.window)))[None, ..., None]
        return self.fn(clip).numpy()[0, len(self.window) - 1]


def make_bundle(image_size, seq_len, directory, fc_rank=None):
    import keras

    from keras_cadstn.config import CADSTNConfig, RefinerConfig
    from keras_cadstn.data.frames import NYU
    from keras_cadstn.models import build_cadstn, build_centre_refiner
    from keras_cadstn.models.bundle import add_low_rank_step, load_bundle, save_bundle
    keras.utils.set_random_seed(0)
    config = CADSTNConfig(image_size=image_size, seq_len=seq_len)
    refiner = build_centre_refiner(RefinerConfig())
    last = refiner.get_layer("offset")  # a refiner that stays put: the path a trained one takes
    last.set_weights([np.zeros_like(w) for w in last.get_weights()])
    bundle = load_bundle(save_bundle(os.path.join(directory, "bundle"), build_cadstn(config=config), NYU, config,
                                     refiner, RefinerConfig()))
    if fc_rank:
        from keras_cadstn.tracking.runtime import sample_clips
        add_low_rank_step(bundle, fc_rank, sample_clips(bundle, 16).crops, "synthetic hands")
    return bundle


def time_networks(tracker, repeats=100) -> tuple:
    """p50 ms of the tracker's networks alone: one pose-step call; the refiner's passes of a tracked frame."""
    def p50(fn, *args):
        for _ in range(5):
            fn(*args)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - start)
        return 1000 * float(np.median(times))
    b = tracker.bundle
    crop = np.zeros((1, b.image_size, b.image_size, 1), np.float32)
    step = p50(tracker.step, crop, tracker.h, tracker.c, np.zeros((1, 3), np.float32))
    if tracker.refiner is None:
        return step, None
    size = b.refiner_config.image_size
    return step, b.refiner_config.tracked_iterations * p50(tracker.refiner, np.zeros((1, size, size, 1), np.float32))


def main():
    p = common.parser(__doc__)
    p.add_argument("--bundle")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=16)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=3, help="times every tracker this many times, in turn")
    p.add_argument("--fc-rank", type=int, default=16, help="rank of the low-rank rows (0: no such rows; 16: chosen "
                   "on validation at 128x128 by bench_low_rank.py)")
    common.run("bench_tracking", run, p)


def run(args):

    from keras_cadstn.models.bundle import load_bundle
    from keras_cadstn.tracking.tracker import HandTracker
    workdir = tempfile.mkdtemp(prefix="bench_tracking_")
    bundle = (load_bundle(args.bundle) if args.bundle
              else make_bundle(args.image_size, args.seq_len, workdir, args.fc_rank))
    depth_frames = frames(bundle, args.frames)
    trackers = []
    variants = [("keras", "float32", None), ("onnx", "float32", None), ("tflite", "float32", None),
                ("tflite", "float16", None), ("tflite", "dynamic_int8", None), ("tflite", "int8", None)]
    if args.fc_rank:
        variants += [("tflite", "dynamic_int8", args.fc_rank), ("tflite", "int8", args.fc_rank)]
    from keras_cadstn.errors import ConfigError, ParityError
    from keras_cadstn.export.tracker import export_for_tracker
    refused, refiner = [], bundle.refiner is not None
    for backend, precision, fc_rank in variants:
        try:  # exported into a scratch folder, not the user's cache or bundle
            paths = export_for_tracker(bundle, backend, precision, directory=workdir, fc_rank=fc_rank)
        except ParityError as e:  # the exporter would not write it: nothing to time
            refused.append(str(e))
            continue
        except ConfigError as e:  # a given bundle without a step of that rank
            if fc_rank is None:
                raise
            refused.append(str(e))
            continue
        for refine in ((True, False) if refiner and precision in ("dynamic_int8", "int8") else (refiner,)):
            tracker = HandTracker(bundle, backend=backend, precision=precision, num_threads=args.threads,
                                  refine=refine, fc_rank=fc_rank, **paths)
            name = (f"streaming, {backend} {precision}" + (f", fc rank {fc_rank}" if fc_rank else "")
                    + ("" if refine == refiner else ", refiner off"))
            trackers.append((name, tracker))
        if refiner and fc_rank and precision == "dynamic_int8":
            trackers.append((f"streaming, {backend} {precision}, fc rank {fc_rank}, two refiner passes when tracked",
                             HandTracker(bundle.with_refiner_settings(tracked_iterations=2), backend=backend,
                                         precision=precision, num_threads=args.threads, fc_rank=fc_rank, **paths)))
            trackers.append((f"streaming, {backend} {precision}, fc rank {fc_rank}, last centre pass on every pixel",
                             HandTracker(bundle, backend=backend, precision=precision, num_threads=args.threads,
                                         fc_rank=fc_rank, centre_step=1, **paths)))
    # the same tracker with the networks (pose step, refiner) replaced by no-ops: what the
    # pre-processing costs
    tracker = HandTracker(bundle, backend="keras")
    k = 3 * bundle.spec.num_joints
    tracker.step = lambda crop, h, c, motion: (np.zeros((1, k), np.float32), h, c)
    if refiner:
        tracker.refiner = lambda crop: np.zeros((1, 3), np.float32)
    trackers.append(("pre-processing", tracker))
    # every tracker once per round, the rounds one after another: a slow spell of the machine
    # (other processes, a busy neighbour) spreads over all rows instead of landing on one
    times = {name: [] for name, _ in trackers}
    for _ in range(args.rounds):
        for name, tracker in trackers:
            times[name].append(time_tracker(tracker, depth_frames))
    preprocessing = np.concatenate(times.pop("pre-processing"))
    rows = [(name, np.concatenate(times[name]), time_networks(tracker)) for name, tracker in trackers[:-1]]
    rows.append((f"naive: {bundle.seq_len}-frame window re-run, keras", time_tracker(NaiveWindowTracker(bundle),
                                                                                   depth_frames[:max(args.frames // 4, 20)]),
                 (None, None)))

    def best(low_rank: bool):
        """(p50, name) of the fastest row with the refiner (where the bundle has one) as configured,
        full or low rank."""
        return min(((np.percentile(ms, 50), name) for name, ms, _ in rows[:-1]
                    if not any(variant in name for variant in ("refiner off", "two refiner passes", "every pixel"))
                    and ("fc rank" in name) == low_rank), default=(None, None))
    naive = np.percentile(rows[-1][1], 50)
    print(f"\nTracker per frame, pre-processing included: {bundle.image_size}x{bundle.image_size} crops, "
          f"T={bundle.seq_len}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.threads} threads\n")
    print("| tracker | p50 (ms) | p99 (ms) | frames/s | vs naive (p50) | step p50 (ms) | refiner p50 (ms) |")
    print("|---|---|---|---|---|---|---|")

    def ms_or_dash(value):
        return "-" if value is None else f"{value:.2f}"
    for name, ms, (step_ms, refiner_ms) in rows:
        p50 = np.percentile(ms, 50)
        print(f"| {name} | {p50:.2f} | {np.percentile(ms, 99):.2f} | {1000 / ms.mean():.0f} | {naive / p50:.1f}x | "
              f"{ms_or_dash(step_ms)} | {ms_or_dash(refiner_ms)} |")
    print(f"| (pre-processing alone: localiser, crop{'s' if refiner else ''}, mm; networks skipped) | "
          f"{np.percentile(preprocessing, 50):.2f} | "
          f"{np.percentile(preprocessing, 99):.2f} | | | | |")
    for why in refused:
        print(f"not timed: {why}")
    print()
    for low_rank in (False, True):
        p50, name = best(low_rank)
        if p50 is not None:
            print(f"best streaming p50{' with the refiner' if refiner else ''}, {'low' if low_rank else 'full'} rank: "
                  f"{p50:.2f} ms ({name}; target <= 2 ms), {naive / p50:.1f}x faster than the naive way "
                  f"(target >= 10x)")


if __name__ == "__main__":
    main()
