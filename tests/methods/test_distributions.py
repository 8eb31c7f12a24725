"""Tests of methods/distributions.py: uniform, Erdos-Renyi and ERK per-layer sparsities."""

import numpy as np
import pytest

import keras_lottery as kl
from keras_lottery.methods import distributions
from keras_lottery.sparsity import masks

# Two convolutions, a hidden Dense layer and a classifier: densities differ widely.
SHAPES = {"conv1": (3, 3, 3, 32), "conv2": (3, 3, 32, 64), "fc": (1024, 256), "out": (256, 10)}


def _sizes(shapes):
    return {name: int(np.prod(shape)) for name, shape in shapes.items()}


def _kept(shapes, sparsities):
    """Per-layer kept counts, by the package's own count rule."""
    return {name: masks.keep_count(size, sparsities[name]) for name, size in _sizes(shapes).items()}


@pytest.mark.parametrize("distribution", ["uniform", "erdos_renyi", "erk"])
@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9, 0.95, 0.99])
def test_the_layers_keep_exactly_the_target_count(distribution, sparsity):
    result = distributions.distribute(SHAPES, distribution, sparsity)
    assert list(result) == list(SHAPES)
    total = sum(_sizes(SHAPES).values())
    assert sum(_kept(SHAPES, result).values()) == masks.keep_count(total, sparsity)
    assert all(0.0 <= value < 1.0 for value in result.values())


def test_uniform_is_the_target_everywhere():
    shapes = {"a": (10, 20), "b": (20, 30), "c": (3, 3, 4, 5)}  # every size a multiple of 10
    assert distributions.uniform(shapes, 0.9) == pytest.approx({"a": 0.9, "b": 0.9, "c": 0.9}, rel=1e-12)


def _densities(shapes, sparsities):
    return {name: 1.0 - sparsities[name] for name in shapes}


def test_erdos_renyi_ratio_between_two_layers_matches_its_formula():
    shapes = {"wide": (2000, 1000), "narrow": (500, 400)}
    density = _densities(shapes, distributions.erdos_renyi(shapes, 0.9))
    expected = ((2000 + 1000) / (2000 * 1000)) / ((500 + 400) / (500 * 400))
    # Each layer's count is rounded to the weight, so the ratio holds to about 1 / count.
    assert density["wide"] / density["narrow"] == pytest.approx(expected, rel=2e-3)


def test_erdos_renyi_uses_only_the_last_two_dimensions_of_a_conv_kernel():
    shapes = {"conv": (3, 3, 64, 128), "fc": (4096, 512)}
    density = _densities(shapes, distributions.erdos_renyi(shapes, 0.95))
    expected = ((64 + 128) / (64 * 128)) / ((4096 + 512) / (4096 * 512))
    assert density["conv"] / density["fc"] == pytest.approx(expected, rel=2e-3)


def test_erk_ratio_between_two_layers_matches_its_formula():
    shapes = {"conv": (3, 3, 64, 128), "fc": (4096, 512)}
    density = _densities(shapes, distributions.erk(shapes, 0.95))
    expected = ((3 + 3 + 64 + 128) / (3 * 3 * 64 * 128)) / ((4096 + 512) / (4096 * 512))
    assert density["conv"] / density["fc"] == pytest.approx(expected, rel=2e-3)
    softer = _densities(shapes, distributions.erk(shapes, 0.95, power=0.5))
    assert softer["conv"] / softer["fc"] == pytest.approx(expected ** 0.5, rel=2e-3)


def test_a_layer_whose_density_would_exceed_one_is_dense_and_the_rest_rescaled():
    result = distributions.erk(SHAPES, 0.9)
    sizes = _sizes(SHAPES)
    raw = {name: sum(shape) / np.prod(shape) for name, shape in SHAPES.items()}
    uncapped_eps = masks.keep_count(sum(sizes.values()), 0.9) / sum(raw[n] * sizes[n] for n in SHAPES)
    # 'out' (2,560 weights, raw density 0.104) would need a density of 1.7 at 10% overall.
    assert uncapped_eps * raw["out"] > 1
    assert result["out"] == 0.0
    # The others keep the ERK ratios among themselves, with a larger eps than before capping.
    density = _densities(SHAPES, result)
    assert density["conv2"] / density["fc"] == pytest.approx(raw["conv2"] / raw["fc"], rel=5e-3)
    assert density["conv1"] / density["fc"] == pytest.approx(raw["conv1"] / raw["fc"], rel=5e-3)
    assert density["fc"] > uncapped_eps * raw["fc"]
    assert 0.0 < result["conv1"] < 1.0
    assert sum(_kept(SHAPES, result).values()) == masks.keep_count(sum(sizes.values()), 0.9)


def test_capping_goes_on_until_no_density_exceeds_one():
    # At 50% the two small layers must both go dense, the largest raw density first.
    shapes = {"small": (4, 4), "medium": (20, 20), "large": (400, 400)}
    result = distributions.erdos_renyi(shapes, 0.5)
    assert result["small"] == 0.0 and result["medium"] == 0.0
    assert sum(_kept(shapes, result).values()) == masks.keep_count(16 + 400 + 160_000, 0.5)


def test_dense_layers_count_toward_the_target_by_default():
    sizes = _sizes(SHAPES)
    total = sum(sizes.values())
    result = distributions.uniform(SHAPES, 0.8, dense=["out"])
    assert result["out"] == 0.0
    assert sum(_kept(SHAPES, result).values()) == masks.keep_count(total, 0.8)
    assert result["fc"] > 0.8  # pruned harder to make room for the dense layer


def test_dense_layers_outside_the_count_leave_the_others_at_the_target():
    sizes = _sizes(SHAPES)
    result = distributions.erk(SHAPES, 0.9, dense="conv1", count_dense=False)
    assert result["conv1"] == 0.0
    others = {name: shape for name, shape in SHAPES.items() if name != "conv1"}
    assert sum(_kept(others, result).values()) == masks.keep_count(sum(sizes[n] for n in others), 0.9)
    # The same as distributing over the other layers alone, then adding the dense one.
    assert result == {"conv1": 0.0, **distributions.erk(others, 0.9)}


def test_every_sparse_layer_keeps_at_least_one_weight():
    shapes = {"tiny": (2, 2), "huge": (1000, 1000)}
    result = distributions.uniform(shapes, 0.999)
    assert masks.keep_count(4, result["tiny"]) >= 1
    assert sum(_kept(shapes, result).values()) == masks.keep_count(1_000_004, 0.999)


def test_a_wrapped_model_gives_its_mask_names_and_the_result_prunes_it_exactly(tiny):
    model = kl.prune_low_magnitude(tiny.build_conv())
    sparsities = distributions.distribute(model, "erk", 0.9)
    assert list(sparsities) == list(kl.get_masks(model))
    new_masks = kl.prune(model, sparsities, strategy="layerwise")
    total = sum(mask.size for mask in new_masks.values())
    assert sum(int(mask.sum()) for mask in new_masks.values()) == masks.keep_count(total, 0.9)


def test_arrays_stand_for_their_shapes():
    arrays = {name: np.zeros(shape) for name, shape in SHAPES.items()}
    assert distributions.erk(arrays, 0.9) == distributions.erk(SHAPES, 0.9)


def test_aliases_name_the_same_distributions():
    assert distributions.distribute(SHAPES, "erdos_renyi_kernel", 0.9) == distributions.erk(SHAPES, 0.9)
    assert distributions.distribute(SHAPES, "er", 0.9) == distributions.erdos_renyi(SHAPES, 0.9)
    assert distributions.distribute(SHAPES, "random", 0.9) == distributions.uniform(SHAPES, 0.9)


@pytest.mark.parametrize("call, error, pattern", [
    (lambda: distributions.distribute(SHAPES, "erk2", 0.9), ValueError,
     "unknown sparsity distribution 'erk2'.*uniform"),
    (lambda: distributions.erk(SHAPES, 1.0), ValueError, r"must be in \[0, 1\)"),
    (lambda: distributions.erk(SHAPES, -0.1), ValueError, r"must be in \[0, 1\)"),
    (lambda: distributions.erk(SHAPES, 0.9, dense=["conv3"]), ValueError, r"dense names layers \['conv3'\]"),
    (lambda: distributions.erk(SHAPES, 0.9, power=-1), ValueError, "power must be a number >= 0"),
    (lambda: distributions.erdos_renyi({"bias": (10,)}, 0.5), ValueError, "input and output dimensions"),
    (lambda: distributions.erk({"empty": (0, 3)}, 0.5), ValueError, "every dimension must be at least 1"),
    (lambda: distributions.uniform(SHAPES, 0.999, dense=["fc"]), ValueError, "too few to leave the other layers"),
    (lambda: distributions.uniform({"a": (4, 4)}, 0.5, dense=["a"]), ValueError, "every layer is dense"),
    (lambda: distributions.erk([(3, 3)], 0.5), TypeError, "dict mask name -> kernel shape"),
])
def test_bad_inputs_raise_errors_that_name_the_fix(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_a_model_without_wrappers_is_refused(tiny):
    with pytest.raises(ValueError, match="prune_low_magnitude"):
        distributions.erk(tiny.build_dense(), 0.9)
