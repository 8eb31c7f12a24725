"""Datasets and their input pipelines.

- `datasets.py`: `load` (IDX files for (Fashion-)MNIST, TFDS for everything else) with the
  validation hold-out; `DataUnavailableError` says how to provide a missing dataset.
- `splits.py`: the in-memory `Splits` that `load` returns, `to_dataset`, and
  `Splits.train_batches` (resumable, optionally augmented).
- `streaming.py`: `load_streaming` -> `StreamingSplits`, whose training set stays encoded and
  is decoded, normalized and augmented batch by batch (`train_batches`); `load_for_training`,
  what the flows call (IDX datasets in memory, TFDS datasets streamed).
- `augment.py`: CIFAR's pad-4 random crop and horizontal flip, stateless and seeded.
- `corruptions.py`: `corrupt` test images (Gaussian noise, blur, rotation, contrast; severities
  0..5, seeded), for evaluating finished runs under distribution shift (not imported here:
  `from keras_lottery.data import corruptions`).
- `prepare.py`: `prepare_offline` of TFDS's cifar10 / cifar100 from CIFAR's binary files.

    splits = data.load("fashion_mnist", validation_examples=5000)
    train = splits.train_batches(batch_size=60, seed=0)
    cifar = data.load_streaming("cifar10", data_dir, validation_examples=5000)
    train = cifar.train_batches(batch_size=128, seed=0, skip_batches=batches_done)
"""

from keras_lottery.data.augment import default_augment, pad_crop_flip  # noqa: F401
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
from keras_lottery.data.prepare import OFFLINE_DATASETS, prepare_offline  # noqa: F401
from keras_lottery.data.streaming import (  # noqa: F401
    CHANNEL_STATISTICS,
    StreamingSplits,
    load_for_training,
    load_streaming,
)
