"""Data: importers (NYU, ICVL), synthetic hands, TFRecord shards and tf.data pipelines."""
from keras_cadstn.data.frames import DATASETS, ICVL, NYU, DatasetSpec, DatasetSplit, Frame, get_spec, hold_out


def make_dataset(*args, **kwargs):
    """See ``keras_cadstn.data.pipeline.make_dataset`` (imported lazily: it loads TensorFlow)."""
    from keras_cadstn.data.pipeline import make_dataset as _make
    return _make(*args, **kwargs)


def __getattr__(name):
    if name == "InputConfig":  # lazily, like make_dataset
        from keras_cadstn.data.pipeline import InputConfig
        return InputConfig
    raise AttributeError(f"module 'keras_cadstn.data' has no attribute {name!r}")


def load_split(dataset: str, root: str, split: str) -> DatasetSplit:
    """Import one split of 'nyu' or 'icvl' from its on-disk format."""
    if dataset == "nyu":
        from keras_cadstn.data.nyu import load_nyu
        return load_nyu(root, split)
    if dataset == "icvl":
        from keras_cadstn.data.icvl import load_icvl
        return load_icvl(root, split)
    from keras_cadstn.errors import ConfigError
    raise ConfigError(f"unknown dataset {dataset!r}; expected 'nyu' or 'icvl'")


__all__ = ["DATASETS", "ICVL", "NYU", "DatasetSpec", "DatasetSplit", "Frame", "get_spec", "hold_out",
           "InputConfig", "make_dataset", "load_split"]
