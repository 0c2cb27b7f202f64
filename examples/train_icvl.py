"""Train and evaluate CADSTN on ICVL (Algorithm 1: Baseline, Sliced-3D, Spatial, Temporal, Fusion).

    python examples/train_icvl.py                              # synthetic NYU-format data (generated once)
    python examples/train_icvl.py --data icvl:/path/to/icvl   # the real data set, the paper's schedule

Every stage resumes where it stopped (re-run the same command after an interruption). Results
files, plots, a bundle and a SavedModel are written under --workdir.
"""
import sys

from keras_cadstn.cli import example_main

if __name__ == "__main__":
    sys.exit(example_main("icvl", __doc__))
