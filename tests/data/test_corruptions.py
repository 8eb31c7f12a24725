"""The corrupted test sets of keras_lottery.data.corruptions, against closed forms and scipy."""

import numpy as np
import pytest
from scipy import ndimage

from keras_lottery.data import corruptions

CORRUPTIONS = corruptions.CORRUPTIONS


def _images(count=32, size=16, channels=1, seed=0):
    """Textured images in [0, 1]: smooth blobs plus pixel noise, some pixels at exactly 0 and 1."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.uniform(size=(count, size, size, channels)), (0, 2, 2, 0))
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return np.clip(0.7 * smooth + 0.3 * rng.uniform(size=smooth.shape), 0, 1).astype(np.float32)


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_severity_zero_returns_an_equal_new_float32_array(corruption):
    images = _images()
    clean = corruptions.corrupt(images, corruption, 0, seed=3)
    assert clean.dtype == np.float32 and not np.shares_memory(clean, images)  # a copy, not the caller's array
    np.testing.assert_array_equal(clean, images)


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_values_stay_in_unit_range_with_the_shape_and_dtype(corruption):
    images = _images(channels=3)
    images[:, :4] = 1.0  # saturated and black regions: noise and contrast must clip there
    images[:, -4:] = 0.0
    for severity in (1, 5):
        shifted = corruptions.corrupt(images, corruption, severity)
        assert shifted.shape == images.shape and shifted.dtype == np.float32
        assert shifted.min() >= 0.0 and shifted.max() <= 1.0


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_distance_from_the_clean_images_grows_with_severity(corruption):
    images = _images(count=64)
    distances = [np.abs(corruptions.corrupt(images, corruption, s, seed=0) - images).mean() for s in range(6)]
    assert distances[0] == 0.0
    assert all(later > earlier for earlier, later in zip(distances, distances[1:])), distances


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_deterministic_given_the_seed_and_seed_dependent_where_random(corruption):
    images = _images()
    first = corruptions.corrupt(images, corruption, 3, seed=1)
    np.testing.assert_array_equal(first, corruptions.corrupt(images, corruption, 3, seed=1))
    other = corruptions.corrupt(images, corruption, 3, seed=2)
    if corruption in ("gaussian_noise", "rotation"):
        assert np.abs(first - other).max() > 0.01
    else:  # blur and contrast draw nothing
        np.testing.assert_array_equal(first, other)


def test_noise_has_the_tables_standard_deviation_and_no_mean():
    images = np.full((64, 16, 16, 1), 0.5, np.float32)  # far from 0 and 1: no clipping
    for severity, sigma in zip(range(1, 6), (0.04, 0.06, 0.08, 0.09, 0.10)):
        noise = corruptions.corrupt(images, "gaussian_noise", severity) - images
        # 16,384 draws: the sample std is within 2% of sigma (about 4 standard errors), the mean within 4 errors.
        assert noise.std() == pytest.approx(sigma, rel=0.02)
        assert abs(noise.mean()) < 4 * sigma / np.sqrt(noise.size)


def test_noise_differs_between_severities_of_one_seed():
    images = np.full((4, 8, 8, 1), 0.5, np.float32)
    one, two = (corruptions.corrupt(images, "gaussian_noise", s) - images for s in (1, 2))
    assert np.corrcoef(one.ravel(), two.ravel())[0, 1] < 0.5  # not the same draws rescaled


def test_contrast_keeps_each_image_channel_mean_and_scales_the_deviation():
    images = 0.3 + 0.4 * _images(count=8, channels=3)  # within [0.3, 0.7]: no clipping at any factor
    for severity, factor in zip(range(1, 6), (0.75, 0.5, 0.4, 0.3, 0.15)):
        shifted = corruptions.corrupt(images, "contrast", severity).astype(np.float64)
        means = images.astype(np.float64).mean(axis=(1, 2), keepdims=True)
        np.testing.assert_allclose(shifted.mean(axis=(1, 2), keepdims=True), means, atol=1e-6)
        np.testing.assert_allclose(shifted - means, factor * (images - means), atol=1e-6)


def test_blur_keeps_a_constant_image_and_stays_within_each_image_and_channel():
    constant = np.full((2, 9, 9, 2), 0.625, np.float32)
    np.testing.assert_allclose(corruptions.corrupt(constant, "gaussian_blur", 5), constant, atol=1e-6)
    delta = np.zeros((2, 15, 15, 2), np.float32)
    delta[0, 7, 7, 0] = 1.0
    blurred = corruptions.corrupt(delta, "gaussian_blur", 5).astype(np.float64)
    assert np.all(blurred[1] == 0) and np.all(blurred[0, ..., 1] == 0)  # no leak across images or channels
    # The impulse response: the sampled Gaussian of std 1.0, cut at 4 std, normalized, on each spatial axis.
    offsets = np.arange(-4, 5)
    kernel = np.exp(-offsets ** 2 / 2.0)
    kernel /= kernel.sum()
    expected = np.zeros((15, 15))
    expected[3:12, 3:12] = np.outer(kernel, kernel)
    np.testing.assert_allclose(blurred[0, ..., 0], expected, atol=1e-6)


def test_blur_uses_the_tables_standard_deviation():
    delta = np.zeros((1, 15, 15, 1), np.float32)
    delta[0, 7, 7, 0] = 1.0
    for severity, sigma in zip(range(1, 6), (0.4, 0.6, 0.7, 0.8, 1.0)):
        row = corruptions.corrupt(delta, "gaussian_blur", severity)[0, 7, :, 0].astype(np.float64)
        radius = int(4.0 * sigma + 0.5)
        offsets = np.arange(-radius, radius + 1)
        kernel = np.exp(-offsets ** 2 / (2 * sigma ** 2))
        kernel /= kernel.sum()
        # Row 7 through the centre holds kernel[0 offset] * kernel (separable).
        np.testing.assert_allclose(row[7 - radius:8 + radius], kernel[radius] * kernel, atol=1e-6)


def test_rotate_by_ninety_degrees_turns_a_hand_checked_image_counterclockwise():
    image = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.float64)[None, ..., None] / 10
    turned = corruptions.rotate(image, [90.0])[0, ..., 0]
    # Counterclockwise as displayed: the right column becomes the top row.
    np.testing.assert_allclose(turned, np.array([[3, 6, 9], [2, 5, 8], [1, 4, 7]]) / 10, atol=1e-9)


def test_rotate_matches_scipy_rotate_bilinear_with_zeros_outside():
    images = _images(count=3, size=12, channels=2)
    for angle in (-30.0, 12.5, 30.0):
        expected = ndimage.rotate(images[1], angle, axes=(1, 0), reshape=False, order=1, mode="constant", cval=0)
        np.testing.assert_allclose(corruptions.rotate(images[1:2], [angle])[0], expected, atol=1e-6)
    corner = corruptions.rotate(np.ones((1, 12, 12, 1)), [30.0])[0, 0, 0, 0]
    assert corner == 0.0  # what turns in from outside the image is black


def test_rotation_turns_each_image_by_its_seeded_angle_within_the_tables_range():
    images = _images(count=200, size=10)
    for severity, largest in zip(range(1, 6), (5, 10, 15, 20, 30)):
        angles = corruptions.rotation_angles(len(images), severity, seed=4)
        assert np.all(np.abs(angles) <= largest) and np.abs(angles).max() > 0.9 * largest
        assert (angles > 0).mean() == pytest.approx(0.5, abs=0.15)  # both directions
    angles = corruptions.rotation_angles(4, 3, seed=4)
    np.testing.assert_allclose(corruptions.corrupt(images[:4], "rotation", 3, seed=4),
                               np.clip(corruptions.rotate(images[:4], angles), 0, 1), atol=1e-6)
    for index, angle in enumerate(angles):  # and each image by its own angle, as scipy turns it
        expected = ndimage.rotate(images[index], angle, axes=(1, 0), reshape=False, order=1, mode="constant")
        np.testing.assert_allclose(corruptions.corrupt(images[:4], "rotation", 3, seed=4)[index], expected,
                                   atol=1e-6)


@pytest.mark.parametrize("arguments, message", [
    (("fog", 1), "unknown corruption 'fog': choose one of gaussian_noise, gaussian_blur, rotation, contrast"),
    (("rotation", 6), "severity must be an integer 0..5"),
    (("rotation", -1), "severity must be an integer 0..5"),
    (("rotation", True), "severity must be an integer 0..5"),
    (("rotation", 2.0), "severity must be an integer 0..5"),
])
def test_bad_corruption_or_severity_names_the_choices(arguments, message):
    with pytest.raises(ValueError, match=message):
        corruptions.corrupt(_images(count=2), *arguments)


def test_bad_images_or_seed_are_refused():
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        corruptions.corrupt(np.zeros((2, 8, 8)), "contrast", 1)
    with pytest.raises(ValueError, match=r"in \[0, 1\].*normalize after"):
        corruptions.corrupt(np.full((1, 4, 4, 1), 1.5), "contrast", 1)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        corruptions.corrupt(_images(count=2), "gaussian_noise", 1, seed=-1)
