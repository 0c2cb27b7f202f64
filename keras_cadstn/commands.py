"""What each ``cadstn`` sub-command does once its flags are parsed (``keras_cadstn.cli`` builds the
parser, silences TensorFlow's start-up and reports errors)."""
from __future__ import annotations

import dataclasses
import os
import sys

from keras_cadstn.config import STAGES, CADSTNConfig, SynthConfig, TrainConfig, demo, paper
from keras_cadstn.data.frames import get_spec
from keras_cadstn.data.metrics import comparison_table, plot_comparison
from keras_cadstn.data.results import align_results, read_results
from keras_cadstn.data.splits import load_split
from keras_cadstn.data.synthetic import write_synthetic_nyu
from keras_cadstn.data.tfrecord import check_image_size, convert_split, read_manifest
from keras_cadstn.demo import run_demo
from keras_cadstn.errors import ConfigError
from keras_cadstn.export.artifacts import keras_artifact_model
from keras_cadstn.export.tracker import export_all, export_for_tracker
from keras_cadstn.models.bundle import add_low_rank_step, load_bundle
from keras_cadstn.models.low_rank import weight_count
from keras_cadstn.presets import card_figures, card_text, list_presets, load_preset, preset_size_mb
from keras_cadstn.tracking.detector import detector_for, load_detector
from keras_cadstn.tracking.localiser import HandLocaliser
from keras_cadstn.tracking.runtime import sample_clips
from keras_cadstn.tracking.sources import open_source, parse_camera
from keras_cadstn.tracking.stream import STDOUT, check_outputs, track_stream
from keras_cadstn.tracking.tracker import HandTracker
from keras_cadstn.training.stages import train_cadstn


def cmd_synth(args):
    counts = write_synthetic_nyu(args.out, frames_per_sequence=args.frames, train_sequences=args.sequences,
                                 test_sequences=args.test_sequences, seed=args.seed,
                                 config=SynthConfig(events=args.events, person=args.person, hand=args.hand, poses=args.poses,
                                                    sensor=args.sensor, scenes=args.scenes))
    print(f"wrote NYU-format synthetic data to {args.out}: {counts}")


def cmd_convert(args):
    check_image_size(args.image_size)  # before any import work
    for split in args.splits:
        data = load_split(args.dataset, args.root, split)
        data = dataclasses.replace(data, spec=dataclasses.replace(data.spec, centre_scale=args.centre_scale))
        out = os.path.join(args.out, split)
        m = convert_split(data, out, shards=args.shards, image_size=args.image_size)
        print(f"{split}: {m['num_records']} records in {len(m['shards'])} shards, "
              f"{len(m['skipped'])} frames skipped (no hand) -> {out}")


FINE_TUNED = ("spatial", "temporal", "fusion")  # what a fine-tuned tracker runs (the others are ablations)
AUTO_ON_OFF = {"auto": None, "on": True, "off": False}  # a tracker option: None leaves it to the bundle


def cmd_train(args):
    # image size and joint count are facts of the records, not flags that could disagree with them
    manifest = read_manifest(os.path.join(args.records, "train"), require_complete=True)
    start = load_preset(args.from_preset) if args.from_preset else None
    defaults = TrainConfig()
    steps = {s: args.steps or defaults.steps[s] for s in STAGES}
    tcfg = TrainConfig(steps=steps, batch_size=args.batch_size, learning_rate=args.lr,
                       decay_every=args.decay_every, checkpoint_every=args.checkpoint_every,
                       mixed_precision=args.mixed_precision, strategy=args.strategy, seed=args.seed,
                       augment=not args.no_augment, rotation=args.rotation, shuffle=not args.no_shuffle, temporal_init=args.temporal_init,
                       deterministic=args.deterministic, fusion_loss=args.fusion_loss)
    mcfg = CADSTNConfig(num_joints=int(manifest["num_joints"]), image_size=int(manifest["image_size"]),
                        seq_len=args.seq_len, centre_motion=args.centre_motion, gate_input=args.gate_input)
    if start is not None:  # the preset's network; the records must be of its crop size and joints
        records = (mcfg.num_joints, mcfg.image_size)
        if records != (start.config.num_joints, start.image_size):
            raise ConfigError(f"{args.records}: records of {records[0]} joints at {records[1]}x{records[1]}, preset "
                              f"{args.from_preset} predicts {start.config.num_joints} at {start.image_size}x"
                              f"{start.image_size}: convert the data with --image-size {start.image_size}")
        mcfg = start.config
    has_val = os.path.isdir(os.path.join(args.records, "val"))
    gate_data = args.fusion_data or ("val" if has_val else "train")
    if gate_data == "val" and not has_val:
        raise ConfigError(f"--fusion-data val: {args.records} has no val/ split (convert one with `cadstn convert`)")
    stages = args.stages or (FINE_TUNED if start is not None else STAGES)
    train_cadstn(os.path.join(args.records, "train", "*.tfrecord"), args.run_dir, mcfg, tcfg, stages=stages,
                 fusion_pattern=os.path.join(args.records, gate_data, "*.tfrecord"),
                 init=start.model if start is not None else None)


def cmd_eval(args):
    gt, gt_names = read_results(args.gt, args.dataset, args.fmt)
    results = {}
    for path in args.pred:
        pred, names = read_results(path, args.dataset, args.fmt)
        label = os.path.basename(path)
        if label in results or sum(os.path.basename(p) == label for p in args.pred) > 1:
            label = path  # two files of the same name: keep both, told apart by their paths
        results[label] = align_results(gt, gt_names, pred, names, args.gt, path)
    print(comparison_table(gt, results))
    paths = plot_comparison(gt, results, args.out, get_spec(args.dataset).joint_names, title=args.dataset.upper())
    print("plots: " + ", ".join(paths))


def cmd_export(args):
    reports, refused = export_all(load_bundle(args.bundle), args.out, records=args.records, precisions=args.precisions,
                                  onnx=not args.no_onnx, saved_model=not args.no_saved_model, num_clips=args.clips,
                                  calibration_records=args.calibration_records, fc_rank=args.fc_rank)
    print(f"\n{len(reports)} artifacts, each checked against the Keras model on real crops "
          f"({args.records or 'synthetic hands rendered with the bundle camera'}"
          + (f"; int8 calibrated on {args.calibration_records}" if args.calibration_records else "") + ")"
          + (f"; {len(refused)} refused (parity beyond tolerance, nothing written)." if refused else "."))
    return 1 if refused else 0


def cmd_compress(args):
    bundle = load_bundle(args.bundle)
    crops = sample_clips(bundle, args.clips, records=args.records).crops
    path = add_low_rank_step(bundle, args.fc_rank, crops, args.records)
    full, low = (keras_artifact_model(bundle, "step", fc_rank=r) for r in (None, args.fc_rank))
    print(f"{path}: the streaming step with fc layers of rank {args.fc_rank}, fitted on {len(crops)} crops of "
          f"{args.records}: {weight_count(full) / 1e6:.2f} M -> {weight_count(low) / 1e6:.2f} M weights. Measure "
          f"its error on validation data (python benchmarks/bench_tracker_accuracy.py) before tracking with --fc-rank "
          f"{args.fc_rank}.")


def cmd_demo(args):
    cfg = demo() if args.data == "synthetic" else paper(args.data)
    world = ("hand", "poses", "sensor", "scenes")
    changes = {k: getattr(args, k) for k in ("workdir", "image_size", "seeds", "centre_scale") + world
               if getattr(args, k) is not None}
    train = {k: getattr(args, k) for k in ("batch_size", "strategy", "deterministic", "rotation") if getattr(args, k) is not None}
    train["mixed_precision"] = args.mixed_precision or cfg.train.mixed_precision
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train), **changes)
    run_demo(cfg.scaled(args.steps_scale) if args.steps_scale != 1.0 else cfg, export=not args.no_export)


def cmd_track(args):
    if not (args.jsonl or args.video or args.show):
        raise ConfigError("nothing to write: give --jsonl FILE, --video FILE and/or --show")
    check_outputs(args.jsonl, args.video)  # before the bundle, the camera and the stream
    # before the camera is opened: a bad bundle fails fast
    bundle = load_bundle(args.bundle) if args.bundle else load_preset(args.preset)
    localiser = HandLocaliser(detector_path={"learned": detector_for(bundle.path), "geometric": None}.get(
        args.detector, args.detector))
    if localiser.detector_path is not None:
        load_detector(localiser.detector_path)  # a missing or broken detector fails fast too
    with open_source(args.source, parse_camera(args.camera) if args.camera is not None else None) as source:
        bundle = bundle.with_camera(source.camera)
        tracker = HandTracker(bundle, backend=args.backend, precision=args.precision, localiser=localiser,
                              refine=AUTO_ON_OFF[args.refiner], upright=AUTO_ON_OFF[args.upright],
                              fc_rank=args.fc_rank, **export_for_tracker(bundle, args.backend, args.precision,
                                                                         fc_rank=args.fc_rank))
        stats = track_stream(tracker, source, jsonl=args.jsonl, video=args.video, show=args.show,
                             max_frames=args.frames)
    written = [(kind, path) for kind, path in (("jsonl", args.jsonl), ("video", args.video))
               if path and path != STDOUT and os.path.isfile(path)]  # a video of no frames is not written
    print(f"{stats['frames']} frames{' (stopped by Ctrl-C or SIGTERM)' if stats['interrupted'] else ''}, hand found in "
          f"{stats['found']}" + (f"; {stats['skipped']} unreadable frames skipped" if stats["skipped"] else "")
          + (f"; {source.missing} frames missing from the source" if getattr(source, "missing", 0) else "")
          + f"; per frame p50 {stats['p50_ms']:.2f} ms, p99 {stats['p99_ms']:.2f} ms"
          + "".join(f"; {kind} {path}" for kind, path in written),
          file=sys.stderr if args.jsonl == STDOUT else sys.stdout)  # standard output: the joints alone


def cmd_presets(args):
    if args.card:
        print(card_text(args.card))
        return
    rows = []
    for name in list_presets():
        f = card_figures(name)
        real, synth = f.get("real_frames", {}).get("label-free", {}), f.get("synthetic_test", {})
        rows.append(f"| {name} | {f.get('version', '?')} | {preset_size_mb(name):.1f} | "
                    f"{synth.get('localiser', float('nan')):.1f} | {real.get('found', '?')} of {real.get('frames', '?')} | "
                    f"{real.get('joint_median_mm', float('nan')):.1f} | {f.get('latency_ms', {}).get('keras', float('nan')):.1f} |")
    print("| preset | version | MB | synthetic test, mm (label-free) | real frames: hand found | real frames: joint "
          "median, mm | ms per frame (Keras, 2 cores) |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows)
          + "\n\n`cadstn presets --card NAME` prints a preset's model card.")
