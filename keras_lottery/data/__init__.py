"""Datasets: IDX files on disk for (Fashion-)MNIST, TFDS for everything else (`datasets.py`).

    splits = data.load("fashion_mnist", validation_examples=5000)
    train = data.to_dataset(splits.train_x, splits.train_y, batch_size=60, shuffle_seed=0, repeat=True)
"""

from keras_lottery.data.datasets import (  # noqa: F401
    DEBIAN_FASHION_MNIST_DIR,
    IDX_DATASETS,
    DataUnavailableError,
    Splits,
    idx_folders,
    load,
    read_idx,
    to_dataset,
)
