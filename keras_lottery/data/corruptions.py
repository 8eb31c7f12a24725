"""Corrupted test sets: Gaussian noise, Gaussian blur, rotation and contrast at severities 1..5.

    shifted = corrupt(splits.test_x, "gaussian_blur", severity=3, seed=0)

What distribution shift does to a lottery ticket (Desai, Zhan & Aly, "Evaluating Lottery
Tickets Under Distributional Shifts", 2019) is measured on test images corrupted as in
Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (ICLR 2019). Their CIFAR-10-C parameters are those of
hendrycks/robustness `ImageNet-C/create_c/make_cifar_c.py` (read at commit ca36008):

* `gaussian_noise`: x + N(0, c^2) per pixel, clipped to [0, 1]; c = 0.04, 0.06, 0.08, 0.09,
  0.10 (the paper's CIFAR values).
* `gaussian_blur`: a Gaussian filter of standard deviation c pixels on the two spatial axes
  only (never across channels or images), edges extended with the nearest pixel and the
  kernel cut at 4 c, as `skimage.filters.gaussian(multichannel=True)` does there;
  c = 0.4, 0.6, 0.7, 0.8, 1.0 (the paper's CIFAR values; one of its validation corruptions).
* `contrast`: (x - m) * c + m, m the mean of each image's channel over its pixels, clipped;
  c = 0.75, 0.5, 0.4, 0.3, 0.15 (the paper's CIFAR values, in make_cifar_c.py). Note:
  0.4, 0.3, 0.2, 0.1, 0.05 are its ImageNet-C values (make_imagenet_c.py), not CIFAR-10-C's.
* `rotation`: not a CIFAR-10-C corruption. MNIST-C (Mu & Gilmer 2019,
  google-research/mnist-c `corruptions.py`) rotates about the image centre by a fixed
  0.2, 0.4, 0.6, 0.8 or 1.0 radian with a random sign (bilinear, zeros outside). The table
  here is ours: each image is rotated about its centre ((H - 1) / 2, (W - 1) / 2) by an
  angle drawn uniformly from [-a, a] degrees, a = 5, 10, 15, 20, 30, bilinear, zeros
  outside; positive angles turn the image counterclockwise as displayed (as
  `scipy.ndimage.rotate` and `np.rot90` do).

Where ours differs from theirs: images stay float32 in [0, 1] (theirs are saved as uint8, so
each corrupted pixel is truncated to a multiple of 1/255); the whole array is corrupted at
once (theirs one PIL image at a time); the random draws (noise, angles) come from NumPy's
`default_rng` seeded by (seed, corruption, severity), so a corrupted test set is the same
for every model evaluated on it and in every process, and differs between corruptions and
severities. Severity 0 is the clean test set.
"""

import numpy as np
from scipy import ndimage

CORRUPTIONS = ("gaussian_noise", "gaussian_blur", "rotation", "contrast")
SEVERITIES = (0, 1, 2, 3, 4, 5)
# Severity s in 1..5 uses entry s - 1 (see the module docstring for which values are the papers').
PARAMETERS = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # noise standard deviation
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # blur standard deviation, in pixels
    "rotation": (5.0, 10.0, 15.0, 20.0, 30.0),  # largest angle, degrees (ours)
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor on the deviation from the mean
}
BLUR_TRUNCATE = 4.0  # kernel radius in standard deviations (skimage's and scipy's default)


def check_corruption(corruption):
    """`corruption` if it is one of CORRUPTIONS.

    Raises:
      ValueError: another name; the message lists the choices.
    """
    if not isinstance(corruption, str) or corruption not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}: choose one of {', '.join(CORRUPTIONS)}.")
    return corruption


def check_severity(severity):
    """`severity` if it is an int in 0..5.

    Raises:
      ValueError: a bool, a non-integer or an integer outside 0..5.
    """
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer 0..5 (0 = clean images), got {severity!r}.")
    return int(severity)


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)


def _check_images(images):
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be an (N, H, W, C) array (a channel axis, as keras_lottery.data loads them), "
                         f"got shape {images.shape}.")
    if images.size and not (np.all(np.isfinite(images)) and images.min() >= 0.0 and images.max() <= 1.0):
        raise ValueError("images must be in [0, 1] (as keras_lottery.data.load returns them): corrupt them before "
                         "normalizing, and normalize after.")
    return images


def rng(corruption, severity, seed=0):
    """The generator of the random draws of (corruption, severity, seed): NumPy's default_rng of the three."""
    return np.random.default_rng([_check_seed(seed), CORRUPTIONS.index(check_corruption(corruption)),
                                  check_severity(severity)])


def rotation_angles(count, severity, seed=0):
    """The angles (degrees) `corrupt(images, "rotation", severity, seed)` turns its `count` images by.

    Uniform in [-a, a], a = PARAMETERS["rotation"][severity - 1]; zeros at severity 0.
    """
    if check_severity(severity) == 0:
        return np.zeros(count)
    largest = PARAMETERS["rotation"][severity - 1]
    return rng("rotation", severity, seed).uniform(-largest, largest, size=count)


def rotate(images, degrees):
    """Each image turned about its centre by its angle: bilinear, zeros outside, float64 out.

    Args:
      images: (N, H, W, C) array.
      degrees: N angles; positive turns counterclockwise as displayed (as scipy.ndimage.rotate).

    Returns:
      (N, H, W, C) float64 array (not clipped: bilinear interpolation of values in [0, 1]
      stays in [0, 1]).
    """
    images = np.asarray(images, np.float64)
    degrees = np.broadcast_to(np.asarray(degrees, np.float64), (len(images),))
    centre = (np.array(images.shape[1:3], np.float64) - 1.0) / 2.0
    rotated = np.empty_like(images)
    for index, (image, angle) in enumerate(zip(images, np.deg2rad(degrees))):
        cos, sin = np.cos(angle), np.sin(angle)
        # Output pixel (r, c) reads the input at centre + M (p - centre): the inverse of the turn.
        matrix = np.array([[cos, sin, 0.0], [-sin, cos, 0.0], [0.0, 0.0, 1.0]])
        offset = np.append(centre - matrix[:2, :2] @ centre, 0.0)
        ndimage.affine_transform(image, matrix, offset=offset, output=rotated[index], order=1, mode="constant",
                                 cval=0.0)
    return rotated


def corrupt(images, corruption, severity, seed=0):
    """A corrupted copy of `images` (see the module docstring for each corruption's table).

    Args:
      images: (N, H, W, C) float array in [0, 1], as keras_lottery.data loads images.
      corruption: one of CORRUPTIONS.
      severity: 0 (the images unchanged) .. 5 (strongest).
      seed: non-negative int; with (corruption, severity) it seeds the random draws.

    Returns:
      A new float32 array, the shape of `images`, values in [0, 1].

    Raises:
      ValueError: an unknown corruption, a severity outside 0..5, a negative seed, images
        that are not 4-D or not in [0, 1]; raised before any work.
    """
    check_corruption(corruption)
    severity = check_severity(severity)
    _check_seed(seed)
    images = _check_images(images)
    if severity == 0:
        return np.array(images, dtype=np.float32, copy=True)
    c = PARAMETERS[corruption][severity - 1]
    x = images.astype(np.float64)
    if corruption == "gaussian_noise":
        x = x + rng(corruption, severity, seed).normal(0.0, c, size=x.shape)
    elif corruption == "gaussian_blur":
        x = ndimage.gaussian_filter(x, sigma=(0.0, c, c, 0.0), mode="nearest", truncate=BLUR_TRUNCATE)
    elif corruption == "contrast":
        means = x.mean(axis=(1, 2), keepdims=True)
        x = (x - means) * c + means
    else:
        x = rotate(x, rotation_angles(len(x), severity, seed))
    return np.clip(x, 0.0, 1.0).astype(np.float32)
