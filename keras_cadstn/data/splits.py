"""Reading a whole split: the importers' frames by dataset name, a converted split's records."""
import numpy as np

from keras_cadstn.data.frames import DatasetSplit
from keras_cadstn.data.icvl import load_icvl
from keras_cadstn.data.nyu import load_nyu
from keras_cadstn.data.pipeline import make_dataset
from keras_cadstn.errors import ConfigError


def load_split(dataset: str, root: str, split: str) -> DatasetSplit:
    """Import one split of 'nyu' or 'icvl' from its on-disk format."""
    if dataset == "nyu":
        return load_nyu(root, split)
    if dataset == "icvl":
        return load_icvl(root, split)
    raise ConfigError(f"unknown dataset {dataset!r}; expected 'nyu' or 'icvl'")


def read_test_split(pattern: str):
    """Every record of a split in recorded order: crops (N, M, M, 1) and the metadata dict."""
    crops, metas = [], []
    for x, _, meta in make_dataset(pattern, mode="frames", batch_size=256, include_meta=True):
        crops.append(x.numpy())
        metas.append({k: v.numpy() for k, v in meta.items()})
    meta = {k: np.concatenate([m[k] for m in metas]) for k in metas[0]}
    return np.concatenate(crops), meta
