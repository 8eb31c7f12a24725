"""A TFDS dataset's training set as a stream: decoded, normalized and augmented batch by batch.

`load` decodes a whole training set into a float32 array (CIFAR-10: 45,000 x 32 x 32 x
3 x 4 bytes = 553 MB). `load_streaming` keeps only the training images as TFDS stored
them, encoded (PNG: TFDS's cifar10 is 132 MiB for 60,000 images, so ~100 MB for the
45,000 kept), and decodes, augments and normalizes each example when its batch is made:

    splits = data.load_streaming("cifar10", data_dir, validation_examples=5000)
    train = splits.train_batches(batch_size=128, seed=0, skip_batches=batches_done)

The stream, for run seed s over the n kept examples:

    position p = e * n + i  ->  example kept[permutation(s, e)[i]]
    image = normalize(pad_crop_flip(decode(record), example_seed(s, p)))

`permutation(s, e)` is a stateless shuffle keyed on (s, epoch e), so every epoch has a
new order and any position is known without producing the ones before it: skipping k
batches starts the index stream at epoch (k * batch_size) // n and drops only the
integer indices before the offset inside it; nothing skipped is decoded or augmented.
All randomness is stateless with a named algorithm (Philox), independent of TensorFlow's
global seed, so the same seed gives the same batches in any process.

Images are normalized per channel, (x / 255 - mean) / std, with the training set's
constants (CHANNEL_STATISTICS for CIFAR-10 and CIFAR-100; for any other dataset
computed in one decoding pass over the kept training examples when it is loaded).
"""

from keras_lottery import compat  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TF loads)

import dataclasses  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_lottery.data import augment as augmentation  # noqa: E402
from keras_lottery.data import datasets  # noqa: E402
from keras_lottery.foundations.validation import check_int  # noqa: E402

# Per-channel mean and standard deviation (RGB) of x / 255 over every pixel of the 50,000
# training images of the official release (NumPy's .mean/.std over axes (0, 1, 2); e.g. as
# reported in MadryLab/robustness issue #70 for CIFAR-10). The often-quoted CIFAR-10 std
# (0.2023, 0.1994, 0.2010) is the mean of per-image stds, not the dataset's; OpenLTH itself
# normalizes CIFAR-10 with ImageNet's constants, which differ from both.
CHANNEL_STATISTICS = {
    "cifar10": ((0.49139968, 0.48215841, 0.44653091), (0.24703223, 0.24348513, 0.26158784)),
    "cifar100": ((0.50707516, 0.48654887, 0.44091784), (0.26733429, 0.25643846, 0.27615047)),
}
_ORDER_SALT = 0x0DE5  # keeps the epoch-order keys apart from the augmentation keys of the same seed
_DECODE_BATCH = 1024  # records decoded at once when loading the evaluation sets or computing statistics


@dataclasses.dataclass(frozen=True, eq=False)
class StreamingSplits:
    """A TFDS dataset with its training set kept encoded and streamed by `train_batches`.

    Validation (held out from train exactly as `datasets.load` holds it out) and test are
    materialized as NumPy arrays, normalized as the training stream is: they are small
    (CIFAR-10: 5,000 and 10,000 images, 61 and 123 MB) and are read whole at every
    evaluation. The training examples are never decoded as a whole array: the kept
    ones are held as their encoded records (`encoded_train_images`, in `load`'s training
    order), and decoded batch by batch.

    Fields as `Splits` has them: `validation_x/_y`, `test_x/_y` (float32 (N, H, W, C)
    normalized, int64 labels), `num_classes`, `input_shape`, `source`, `file_hashes`,
    `name`; and the normalization's per-channel `mean` and `std` (of x / 255).
    """

    validation_x: np.ndarray
    validation_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    input_shape: tuple
    source: str
    file_hashes: tuple
    name: str
    mean: tuple
    std: tuple
    encoded_train_images: tf.Tensor = dataclasses.field(repr=False)
    train_labels: tf.Tensor = dataclasses.field(repr=False)
    decode: object = dataclasses.field(repr=False)  # encoded image (tf.string) -> uint8 (H, W, C)

    @property
    def train_size(self):
        """Number of training examples (kept, after the hold-out and `train_examples`)."""
        return int(self.train_labels.shape[0])

    def normalize(self, images):
        """(images - mean) / std per channel, float32, for images in [0, 1] (the stream's arithmetic)."""
        return normalized(images, self.mean, self.std)

    def train_batches(self, batch_size, seed, skip_batches=0, augment=None):
        """The endless training stream of (images, labels) batches, from batch `skip_batches` on.

        Batch k of the stream holds positions k * batch_size .. (k + 1) * batch_size - 1
        (batches run across epoch boundaries). It is the same for the same arguments in
        any process, whatever TensorFlow's global seed; with `skip_batches=m` it is the
        uninterrupted stream without its first m batches, and costs no decoding of them.

        Args:
          batch_size: examples per batch.
          seed: the run's data seed: the order of every epoch and every augmentation.
          skip_batches: batches of the uninterrupted stream to leave out (batches done).
          augment: True, False, or None for the dataset's default (on for cifar10 and
            cifar100, as in OpenLTH; off otherwise).

        Returns:
          An infinite `tf.data.Dataset` of (float32 normalized images (B, H, W, C), int64
          labels (B,)) batches, decoded in a parallel map (deterministic order) and
          prefetched.

        Raises:
          ValueError: a bad argument.
        """
        batch_size = check_int(batch_size, "batch_size", 1)
        skip_batches = check_int(skip_batches, "skip_batches", 0)
        seed = check_int(seed, "seed", 0)
        augment = augmentation.resolve_augment(augment, self.name)
        first = skip_batches * batch_size
        indices = epoch_orders(self.train_size, seed, first_epoch=first // self.train_size)
        indices = indices.skip(first % self.train_size)
        records, labels, decode = self.encoded_train_images, self.train_labels, self.decode
        mean, std = tf.constant(np.float32(self.mean)), tf.constant(np.float32(self.std))

        def example(position, index):
            image = tf.cast(decode(tf.gather(records, index)), tf.float32) / 255.0
            if augment:
                image = augmentation.pad_crop_flip(image, augmentation.example_seed(seed, position))
            image = (image - mean) / std
            image.set_shape(self.input_shape)
            return image, tf.gather(labels, index)

        return augmentation.positioned_batches(indices, first, batch_size, example)


def epoch_orders(size, seed, first_epoch=0):
    """The endless stream of indices 0..size-1, a new stateless permutation each epoch.

    Epoch e is `stateless_shuffle(range(size))` keyed on (seed, e): computed once per
    epoch, and only for the epochs the stream reaches.

    Returns:
      A `tf.data.Dataset` of int64 indices, starting at epoch `first_epoch`.
    """
    base = tf.constant([seed, _ORDER_SALT], tf.int64)

    def epoch(index):
        key = tf.random.experimental.stateless_fold_in(base, index, alg=augmentation.RNG_ALGORITHM)
        order = tf.random.experimental.stateless_shuffle(tf.range(size, dtype=tf.int64), key,
                                                        alg=augmentation.RNG_ALGORITHM)
        return tf.data.Dataset.from_tensor_slices(order)

    return tf.data.Dataset.counter(first_epoch).flat_map(epoch)


def load_streaming(name, data_dir=None, validation_examples=5000, train_examples=None, split_seed=0):
    """Opens a prepared TFDS dataset for streaming training, with `load`'s validation hold-out.

    The arguments, checks and errors are `datasets.load`'s (the same argument checks, the
    same TFDS builder checks and DataUnavailableError), and the held-out and kept
    examples are exactly those `load` picks for the same arguments. MNIST and
    Fashion-MNIST, read from IDX files by `load`, are small enough for it: use `load`.

    Loading reads the training split once (its encoded records) and decodes only the
    held-out ones, plus, for datasets without CHANNEL_STATISTICS, every kept one once to
    compute the normalization's mean and std.

    Args:
      name: a TFDS dataset name with (image, label) supervised keys and fixed-size images.
      data_dir: the TFDS data_dir; None for TFDS's default.
      validation_examples: examples held out from train for validation.
      train_examples: if set, keep only this many training examples (after the hold-out).
      split_seed: seed of the permutation that picks the held-out examples.

    Returns:
      `StreamingSplits`.

    Raises:
      ValueError: bad arguments, an IDX dataset, an unknown name, a dataset without
        fixed-size images, or too few examples.
      DataUnavailableError: the dataset is not prepared and cannot be downloaded.
    """
    data_dir, validation_examples, train_examples, split_seed = datasets.check_load_arguments(
        name, data_dir, validation_examples, train_examples, split_seed)
    if name in datasets.IDX_DATASETS:
        raise ValueError(f"{name} is read from IDX files and fits in memory: use data.load({name!r}, ...) and its "
                         "Splits.train_batches instead of load_streaming.")
    import tensorflow_datasets as tfds  # noqa: PLC0415  (slow import, only needed here)

    builder = datasets.prepared_builder(name, data_dir)
    image_key, label_key = builder.info.supervised_keys
    feature = builder.info.features[image_key]
    input_shape = tuple(feature.shape)
    if len(input_shape) != 3 or None in input_shape:
        raise ValueError(f"{name}'s images have shape {input_shape}: streaming needs fixed-size (H, W, C) images; "
                         "use data.load instead.")
    encoded = builder.as_dataset(split="train", shuffle_files=False, decoders={image_key: tfds.decode.SkipDecoding()})
    records, labels = [], []
    for batch in encoded.map(lambda example: (example[image_key], example[label_key])).batch(4096).as_numpy_iterator():
        records.append(batch[0])
        labels.append(batch[1])
    records, labels = np.concatenate(records), np.concatenate(labels).astype(np.int64)
    held_out, kept = datasets.split_indices(name, len(records), validation_examples, train_examples, split_seed)
    decode = feature.decode_example
    mean, std = CHANNEL_STATISTICS.get(name) or channel_statistics(records[kept], decode)
    test_x, test_y = datasets.supervised_arrays(builder, "test")
    source, hashes = datasets.tfds_record(name, data_dir, builder)
    return StreamingSplits(
        validation_x=normalized(datasets.to_unit_float(_decoded(records[held_out], decode, input_shape)), mean, std),
        validation_y=labels[held_out], test_x=normalized(test_x, mean, std), test_y=test_y,
        num_classes=int(builder.info.features[label_key].num_classes), input_shape=input_shape, source=source,
        file_hashes=hashes, name=name, mean=tuple(float(value) for value in mean),
        std=tuple(float(value) for value in std),
        encoded_train_images=tf.constant(records[kept]), train_labels=tf.constant(labels[kept]), decode=decode,
    )


def normalized(images, mean, std):
    """(images - mean) / std per channel in float32, NumPy in NumPy out: what the stream computes in TF."""
    return (np.asarray(images, np.float32) - np.float32(mean)) / np.float32(std)


def _decoded_batches(records, decode):
    """uint8 image batches of encoded `records` (a NumPy array of bytes), in order."""
    dataset = tf.data.Dataset.from_tensor_slices(records).map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                                                              deterministic=True)
    return dataset.batch(_DECODE_BATCH).as_numpy_iterator()


def _decoded(records, decode, input_shape):
    """The uint8 images of encoded `records`, (N, H, W, C); (0, H, W, C) for none."""
    if not len(records):
        return np.zeros((0,) + tuple(input_shape), np.uint8)
    return np.concatenate(list(_decoded_batches(records, decode)))


def channel_statistics(records, decode):
    """Per-channel (mean, std) of x / 255 over every pixel of the encoded images `records`, in one pass.

    Sums and sums of squares are accumulated in float64 batch by batch, so memory stays
    at one decoded batch. A channel that never varies gets std 1 (nothing to scale).
    """
    count, total, squares = 0, 0.0, 0.0
    for images in _decoded_batches(records, decode):
        pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
        count += len(pixels)
        total = total + pixels.sum(axis=0)
        squares = squares + np.square(pixels).sum(axis=0)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
    return mean, np.where(std > 0, std, 1.0)


def load_for_training(name, data_dir=None, validation_examples=5000, train_examples=None, split_seed=0):
    """The splits a training flow reads: MNIST and Fashion-MNIST in memory, other datasets streamed.

    MNIST and Fashion-MNIST go through `load` (their IDX files, else TFDS's copy: small, and
    their runs stay as they were); every other dataset through `load_streaming`. Both results
    have `train_size` and `train_batches`, all that the flows use of the training set.
    Arguments, returns and errors: those of `load` and `load_streaming`.
    """
    if name in datasets.IDX_DATASETS:
        return datasets.load(name, data_dir, validation_examples, train_examples, split_seed=split_seed)
    return load_streaming(name, data_dir, validation_examples, train_examples, split_seed)
