"""Data: importers (NYU, ICVL), synthetic hands, TFRecord shards and tf.data pipelines."""
from keras_cadstn.data.frames import DATASETS, ICVL, NYU, DatasetSpec, DatasetSplit, Frame, get_spec


def make_dataset(*args, **kwargs):
    """See ``keras_cadstn.data.pipeline.make_dataset`` (imported lazily: it loads TensorFlow)."""
    from keras_cadstn.data.pipeline import make_dataset as _make
    return _make(*args, **kwargs)


def load_split(dataset: str, root: str, split: str) -> DatasetSplit:
    """Import one split of 'nyu' or 'icvl' from its on-disk format."""
    if dataset == "nyu":
        from keras_cadstn.data.nyu import load_nyu
        return load_nyu(root, split)
    if dataset == "icvl":
        from keras_cadstn.data.icvl import load_icvl
        return load_icvl(root, split)
    raise ValueError(f"unknown dataset {dataset!r}; expected 'nyu' or 'icvl'")


__all__ = ["DATASETS", "ICVL", "NYU", "DatasetSpec", "DatasetSplit", "Frame", "get_spec",
           "make_dataset", "load_split"]
