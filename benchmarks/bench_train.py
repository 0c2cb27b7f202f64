"""Training speed per stage, and whether the input pipeline keeps up with it.

For each configuration and stage: training frames/s (``model.fit`` on the stage's own input
pipeline, after warm-up steps), the process's CPU use while training (CPU seconds / wall seconds:
200% is both cores of a 2-core machine), the input pipeline's frames/s alone for the same dataset,
and pipeline / training (target >= 3: the trainer never waits for data).

Configurations: ``demo`` (64x64 crops, batch 64, as ``cadstn demo``) and ``paper`` (128x128, batch
128, T=16); both use the paper's layer sizes. Variants (``--variants``) re-run the demo
configuration in a fresh process each: ``threads=INTRA:INTER`` (TensorFlow's thread pools),
``jit`` (XLA), ``mixed`` (mixed_float16: for GPUs; on a CPU it shows what it costs),
``spe=N`` (N steps per call into the compiled function).

Run: python benchmarks/bench_train.py [--configs demo paper] [--steps 8]
         [--variants threads=1:1 threads=2:2 spe=10 jit mixed]
"""
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

CONFIGS = {"demo": dict(image_size=64, batch_size=64), "paper": dict(image_size=128, batch_size=128)}


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Clock:
    """Wall and CPU time between two marks."""

    def start(self):
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()

    def stop(self):
        return time.perf_counter() - self.wall, cpu_seconds() - self.cpu


def make_records(root, image_size):
    from keras_cadstn.config import SynthConfig
    from keras_cadstn.data.nyu import load_nyu
    from keras_cadstn.data.synthetic import write_synthetic_nyu
    from keras_cadstn.data.tfrecord import convert_split
    source = os.path.join(root, "synthetic")
    if not os.path.isdir(source):
        write_synthetic_nyu(source, frames_per_sequence=160, train_sequences=4, test_sequences=0, seed=0,
                            config=SynthConfig(events=True), progress=False)
    out = os.path.join(root, f"records_{image_size}")
    if not os.path.isdir(out):
        convert_split(load_nyu(source, "train"), out, shards=4, image_size=image_size, progress=False)
    return os.path.join(out, "*.tfrecord")


def frames_per_batch(stage, tcfg, mcfg):
    from keras_cadstn.training.stages import STAGE_MODE, stage_batch_size
    return stage_batch_size(tcfg, mcfg, stage) * (mcfg.seq_len if STAGE_MODE[stage] == "sequences" else 1)


def time_training(model, dataset, warmup, steps):
    """(wall s, CPU s, steps timed): from the end of the warm-up to the end of training."""
    import keras
    clock, marks = Clock(), {}

    class Marks(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if "from" not in marks and batch + 1 >= warmup:  # with steps_per_execution, batch jumps
                clock.start()
                marks["from"] = batch + 1

        def on_train_end(self, logs=None):
            marks["wall"], marks["cpu"] = clock.stop()
    model.fit(dataset, epochs=1, steps_per_epoch=warmup + steps, callbacks=[Marks()], verbose=0)
    return marks["wall"], marks["cpu"], warmup + steps - marks["from"]


def time_input(dataset, warmup, steps):
    it, clock = iter(dataset), Clock()
    for _ in range(warmup):
        next(it)
    clock.start()
    for _ in range(steps):
        next(it)
    return clock.stop()


def bench_config(name, pattern, steps, warmup, jit=False, steps_per_execution=1, stages=None):
    import keras

    from keras_cadstn.config import STAGES, CADSTNConfig, TrainConfig
    from keras_cadstn.training.stages import build_stage, stage_input
    size = CONFIGS[name]
    mcfg = CADSTNConfig(image_size=size["image_size"])
    tcfg = TrainConfig(batch_size=size["batch_size"], jit_compile=jit, steps_per_execution=steps_per_execution)
    # whole executions only: a last, shorter one would be traced anew inside the timed steps
    warmup, steps = (-(-n // steps_per_execution) * steps_per_execution for n in (warmup, steps))
    built, rows = {}, []
    for stage in STAGES:
        keras.utils.set_random_seed(0)
        model = build_stage(stage, mcfg, tcfg, baseline=built.get("baseline"), spatial=built.get("spatial"),
                            temporal=built.get("temporal"))
        built[stage] = model
        if stages and stage not in stages:
            continue
        train_wall, train_cpu, timed = time_training(model, stage_input(pattern, stage, tcfg, mcfg), warmup, steps)
        input_wall, input_cpu = time_input(stage_input(pattern, stage, tcfg, mcfg), warmup, steps)
        train_fps = frames_per_batch(stage, tcfg, mcfg) * timed / train_wall
        input_fps = frames_per_batch(stage, tcfg, mcfg) * steps / input_wall
        rows.append(dict(config=name, stage=stage, train_fps=train_fps, train_cpu=train_cpu / train_wall,
                         input_fps=input_fps, input_cpu=input_cpu / input_wall, ratio=input_fps / train_fps))
        print(f"  {name} {stage}: {rows[-1]['train_fps']:.0f} frames/s training", file=sys.stderr, flush=True)
    return rows


def table(rows, label="config"):
    lines = [f"| {label} | stage | training frames/s | CPU while training | input frames/s | input / training |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r[label]} | {r['stage']} | {r['train_fps']:,.0f} | {100 * r['train_cpu']:.0f}% | "
                     f"{r['input_fps']:,.0f} | {r['ratio']:.1f} |")
    return "\n".join(lines)


def run_variant(variant, args, workdir):
    """One demo-configuration run in a fresh process (thread pools are fixed when TF starts)."""
    env = dict(os.environ)
    extra = []
    if variant.startswith("threads="):
        intra, inter = variant.split("=", 1)[1].split(":")
        env.update(TF_NUM_INTRAOP_THREADS=intra, TF_NUM_INTEROP_THREADS=inter)
    elif variant == "jit":
        extra = ["--jit"]
    elif variant == "mixed":
        extra = ["--mixed-precision"]
    elif variant.startswith("spe="):
        extra = ["--steps-per-execution", variant.split("=", 1)[1]]
    elif variant != "default":
        raise SystemExit(f"bench_train.py: error: unknown variant {variant!r}")
    stages = ["--stages", *args.stages] if args.stages else []
    out = subprocess.run([sys.executable, __file__, "--configs", "demo", "--steps", str(args.steps), "--warmup",
                          str(args.warmup), "--workdir", workdir, "--json"] + stages + extra, env=env,
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"bench_train.py: error: variant {variant} failed: {out.stderr[-2000:]}")
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    for r in rows:
        r["variant"] = variant
    return rows


def main():
    p = common.parser(__doc__)
    p.add_argument("--configs", nargs="*", default=["demo", "paper"], choices=sorted(CONFIGS))
    p.add_argument("--steps", type=int, default=8, help="timed steps per stage")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (tracing, buffers)")
    p.add_argument("--stages", nargs="*", help="time only these stages (default: all five)")
    p.add_argument("--variants", nargs="*", default=[], help="threads=INTRA:INTER, jit, mixed, spe=N, default")
    p.add_argument("--workdir", help="keeps the synthetic records between runs (default: a temporary folder)")
    p.add_argument("--jit", action="store_true")
    p.add_argument("--mixed-precision", action="store_true")
    p.add_argument("--steps-per-execution", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the rows as JSON (used for variants)")
    common.run("bench_train", run, p)


def run(args):
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or tmp
        if args.mixed_precision:
            import keras
            keras.mixed_precision.set_global_policy("mixed_float16")
        rows = []
        for name in args.configs:
            pattern = make_records(workdir, CONFIGS[name]["image_size"])
            rows += bench_config(name, pattern, args.steps, args.warmup, args.jit, args.steps_per_execution,
                                 args.stages)
        if args.json:
            print(json.dumps(rows))
            return
        variants = [r for v in args.variants for r in run_variant(v, args, workdir)]
    import tensorflow as tf
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, {args.steps} timed steps per stage after "
          f"{args.warmup} warm-up steps; CPU use: 100% = one core\n")
    print(table(rows))
    if variants:
        print("\nDemo configuration, one process per variant:\n")
        print(table(variants, "variant"))


if __name__ == "__main__":
    main()
