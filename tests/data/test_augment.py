"""Tests of data/augment.py: pad-4 crop and flip, at the expected rates, reproducible from the seed."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from keras_lottery.data import augment

SEEDS = 600


def numbered_image(height=32, width=32, channels=3):
    """An image whose every pixel value is distinct and non-zero, so that crop and flip can be read back."""
    return np.arange(1, height * width * channels + 1, dtype=np.float32).reshape(height, width, channels)


def expected(image, row, column, flip, padding=augment.PADDING):
    """What torchvision's RandomCrop(size, padding) at (row, column) and an optional flip give."""
    height, width = image.shape[:2]
    padded = np.pad(image, [(padding, padding), (padding, padding), (0, 0)])  # constant 0, torchvision's default
    cropped = padded[row:row + height, column:column + width]
    return cropped[:, ::-1] if flip else cropped


def read_back(image, output, padding=augment.PADDING):
    """The (row, column, flip) that turns `image` into `output`; fails if none does."""
    for row in range(2 * padding + 1):
        for column in range(2 * padding + 1):
            for flip in (False, True):
                if np.array_equal(expected(image, row, column, flip, padding), output):
                    return row, column, flip
    raise AssertionError("the output is no pad-crop-flip of the input")


@pytest.fixture(scope="module")
def outcomes():
    """(row, column, flip) of SEEDS augmentations of one image, at positions 0..SEEDS-1 of run seed 7."""
    image = numbered_image()
    augmented = tf.data.Dataset.range(SEEDS).map(
        lambda position: augment.pad_crop_flip(tf.constant(image), augment.example_seed(7, position)))
    return [read_back(image, output) for output in augmented.as_numpy_iterator()]


def test_output_is_a_padded_crop_of_the_input_with_its_shape_and_dtype():
    image = numbered_image()
    output = augment.pad_crop_flip(tf.constant(image), augment.example_seed(0, tf.constant(3, tf.int64)))
    assert output.shape == (32, 32, 3) and output.dtype == tf.float32
    read_back(image, output.numpy())


def test_every_crop_offset_and_the_flip_occur_at_the_expected_rate(outcomes):
    offsets = collections.Counter((row, column) for row, column, _ in outcomes)
    assert set(offsets) == {(row, column) for row in range(9) for column in range(9)}  # all 81, no others
    # Each offset has probability 1/81: about 7.4 of 600; far from that means a biased draw.
    assert max(offsets.values()) < 25
    rows = collections.Counter(row for row, _, _ in outcomes)
    assert all(abs(count - SEEDS / 9) < 0.4 * SEEDS / 9 for count in rows.values()), rows
    flips = sum(flip for _, _, flip in outcomes)
    assert 0.42 * SEEDS < flips < 0.58 * SEEDS


def test_the_pad_is_zeros():
    # At row offset 0 the top 4 rows are padding: zeros (torchvision's fill), not a reflection or an edge copy.
    image = numbered_image()
    for position in range(200):
        output = augment.pad_crop_flip(tf.constant(image), augment.example_seed(1, position)).numpy()
        if read_back(image, output)[0] == 0:
            assert not output[:4].any() and output[4:].any()
            return
    pytest.fail("no crop at row offset 0 in 200 positions")


def test_the_same_seed_and_position_reproduce_and_others_differ():
    image = tf.constant(numbered_image())
    first = augment.pad_crop_flip(image, augment.example_seed(5, 11)).numpy()
    again = tf.function(augment.pad_crop_flip)(image, augment.example_seed(5, tf.constant(11, tf.int64))).numpy()
    np.testing.assert_array_equal(first, again)
    others = {augment.pad_crop_flip(image, augment.example_seed(seed, position)).numpy().tobytes()
              for seed, position in ((5, 12), (6, 11), (5, 13), (6, 12))}
    assert len(others | {first.tobytes()}) > 2  # 162 outcomes: four other keys cannot all repeat this one


def test_works_on_grayscale_28x28():
    image = numbered_image(28, 28, 1)
    outputs = [augment.pad_crop_flip(tf.constant(image), augment.example_seed(2, position)).numpy()
               for position in range(20)]
    assert all(output.shape == (28, 28, 1) for output in outputs)
    readings = {read_back(image, output) for output in outputs}
    assert len(readings) > 5 and any(flip for _, _, flip in readings)


@pytest.mark.parametrize("value, expected_result", [(None, True), (True, True), (False, False)])
def test_augment_default_is_on_for_cifar_only(value, expected_result):
    assert augment.resolve_augment(value, "cifar10") is expected_result
    assert augment.resolve_augment(None, "cifar100") is True
    assert augment.resolve_augment(None, "fashion_mnist") is False
    with pytest.raises(ValueError, match="augment must be True, False or None"):
        augment.resolve_augment("yes", "cifar10")
