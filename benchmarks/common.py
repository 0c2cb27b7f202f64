"""What every benchmark shares: the ``--out`` option, Markdown tables, and the record of a run.

A benchmark's ``main(args)`` prints its tables (built with ``table``) and returns its figures as a
dict; ``run`` parses the arguments, times the run and, with ``--out DIR``, writes ``DIR/NAME.md``
(what was printed, under the command and the machine) and ``DIR/NAME.json`` (the figures, the
command, the machine), each atomically.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import time

from keras_cadstn import fileio


def table(header, rows) -> str:
    """A Markdown table: ``header`` a sequence of column names, ``rows`` sequences of cells."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def fail(message: str):
    """A bad combination of options: one line on stderr, exit code 2."""
    print(f"{os.path.basename(sys.argv[0])}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="folder for NAME.md (the printed tables) and NAME.json (the figures)")
    return p


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()


def run(name: str, main, p: argparse.ArgumentParser, argv=None) -> dict:
    """Parse ``argv``, run ``main(args)`` with its output shown and kept, write ``--out`` files."""
    args = p.parse_args(argv)
    command = f"python benchmarks/{name}.py " + " ".join(sys.argv[1:] if argv is None else argv)
    printed, start = io.StringIO(), time.perf_counter()
    with contextlib.redirect_stdout(_Tee(sys.stdout, printed)):
        figures = main(args) or {}
    wall = time.perf_counter() - start
    print(f"\nwall time {wall:.0f} s")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        header = f"`{command.strip()}`\n\n{machine()}; wall time {wall:.0f} s\n\n"
        fileio.write_text(os.path.join(args.out, f"{name}.md"), header + printed.getvalue())
        fileio.write_text(os.path.join(args.out, f"{name}.json"), json.dumps(
            {"command": command.strip(), "machine": machine(), "wall_s": round(wall, 1), "figures": figures},
            indent=1, default=float) + "\n")
        print(f"wrote {args.out}/{name}.md and {name}.json")
    return figures
