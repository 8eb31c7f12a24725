"""A tiny CIFAR-10 for tests: CIFAR's binary files with random images, and TFDS's real builder run on them.

    data_dir = cifar_fixture.prepare_tiny_cifar10(tmp_path / "tfds")
    splits = data.load("cifar10", data_dir, validation_examples=20)

The images carry a learnable class signal (each class has its own mean colour, plus
noise), so a model trained on them beats chance. Nothing touches the network.
"""

import os
import tempfile

import numpy as np

from keras_lottery.data import prepare

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# One mean colour per class, fixed (not drawn from `seed`) so that every fixture carries the same signal.
CLASS_COLOURS = np.random.default_rng(1234).integers(48, 208, size=(10, 3))
NOISE = 32  # standard deviation of the pixel noise around the class colour


def cifar10_images(labels, seed):
    """uint8 (N, 32, 32, 3) images: the class colour of each label plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, NOISE, size=(len(labels), 32, 32, 3))
    return np.clip(np.rint(CLASS_COLOURS[labels][:, None, None, :] + noise), 0, 255).astype(np.uint8)


def cifar10_records(images, labels):
    """CIFAR's binary records of `images` (N, 32, 32, 3): a label byte, then the R, G and B planes."""
    planes = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), -1)
    return np.concatenate([np.asarray(labels, np.uint8)[:, None], planes], axis=1).tobytes()


def write_cifar10_binary(folder, train_per_batch=40, test_examples=50, seed=0):
    """Writes `folder`/cifar-10-batches-bin/ as CIFAR-10's binary release lays it out.

    Args:
      folder: where to write (created if missing).
      train_per_batch: records in each of data_batch_1.bin .. data_batch_5.bin.
      test_examples: records in test_batch.bin.
      seed: seed of the labels and the noise.

    Returns:
      (folder, images): the folder as a string (what `prepare_offline` takes as
      manual_dir) and {"train": (images, labels), "test": (images, labels)} in file order.
    """
    root = os.path.join(folder, prepare.LAYOUTS["cifar10"].folder)
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for split, count in (("train", 5 * train_per_batch), ("test", test_examples)):
        labels = rng.permutation(np.arange(count) % 10)  # balanced, in random order
        written[split] = (cifar10_images(labels, rng.integers(2**31)), labels)
    train_images, train_labels = written["train"]
    for index in range(5):
        part = slice(index * train_per_batch, (index + 1) * train_per_batch)
        with open(os.path.join(root, f"data_batch_{index + 1}.bin"), "wb") as file:
            file.write(cifar10_records(train_images[part], train_labels[part]))
    with open(os.path.join(root, "test_batch.bin"), "wb") as file:
        file.write(cifar10_records(*written["test"]))
    with open(os.path.join(root, "batches.meta.txt"), "w", encoding="utf-8") as file:
        file.write("\n".join(CLASS_NAMES) + "\n\n")  # the real file ends in blank lines too
    return str(folder), written


def prepare_tiny_cifar10(data_dir, train_per_batch=40, test_examples=50, seed=0):
    """Prepares TFDS's real `cifar10` in `data_dir` from a tiny random binary release.

    Returns:
      `data_dir` as a string: `tfds.builder("cifar10", data_dir=...)` and `data.load`
      read it as they would the real one (5 * train_per_batch training examples).
    """
    with tempfile.TemporaryDirectory(prefix="tiny_cifar10_") as folder:
        write_cifar10_binary(folder, train_per_batch, test_examples, seed)
        prepare.prepare_offline("cifar10", data_dir, folder)
    return str(data_dir)
