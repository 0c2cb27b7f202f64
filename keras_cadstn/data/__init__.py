"""Data: importers (NYU, ICVL), synthetic hands, pre-processing, TFRecord shards, tf.data pipelines,
results files and metrics."""
from keras_cadstn.data.frames import DATASETS, ICVL, NYU, DatasetSpec, DatasetSplit, Frame, get_spec, hold_out
from keras_cadstn.data.pipeline import make_dataset
from keras_cadstn.data.splits import load_split

__all__ = ["DATASETS", "ICVL", "NYU", "DatasetSpec", "DatasetSplit", "Frame", "get_spec", "hold_out",
           "make_dataset", "load_split"]
