"""Pure-NumPy tests of masks.py (counts, tie rule, strategies, shrinking) and criteria.py."""

import math
from fractions import Fraction

import numpy as np
import pytest

from keras_lottery.sparsity import criteria
from keras_lottery.sparsity import masks


def _at_least_one(n, kept, float_sparsity):
    """The count rule's floor: one weight stays while the sparsity (as a float) is below 1."""
    return max(kept, 1) if n and float_sparsity < 1.0 else kept


def round_half_up_exact(n, prune_rate, rounds):
    """round((1 - p) ** r * n), half up, computed exactly with the decimal value of p; at least one."""
    value = (1 - Fraction(str(prune_rate))) ** rounds * n
    return _at_least_one(n, math.floor(value + Fraction(1, 2)), masks.sparsity_after_rounds(prune_rate, rounds))


def keep_formula_exact(n, sparsity):
    """floor(n * (1 - s) + 1/2) with s taken as the decimal it is written as; at least one."""
    return _at_least_one(n, math.floor(n * (1 - Fraction(str(sparsity))) + Fraction(1, 2)), sparsity)


# ----------------------------------------------------------------------------------------
# Counts.


@pytest.mark.parametrize(
    "size, sparsity, expected",
    [
        (10, 0.25, 8),  # 7.5 rounds up
        (7, 0.5, 4),  # 3.5 -> 4
        (5, 0.5, 3),  # 2.5 -> 3
        (3, 0.5, 2),  # 1.5 -> 2
        (1, 0.5, 1),  # 0.5 -> 1
        (1, 0.6, 1),  # 0.4 -> 0, but a layer keeps at least one weight
        (2, 0.75, 1),  # 0.5 -> 1
        (100, 0.0, 100),
        (100, 0.2, 80),
        (100, 0.999, 1),  # 0.1 -> 0 -> at least one
        (1000, 0.9995, 1),  # 0.5 -> 1
        (0, 0.5, 0),
        (784 * 300, 0.2, 188160),
    ],
)
def test_keep_count_rounds_half_up(size, sparsity, expected):
    assert masks.keep_count(size, sparsity) == expected


def test_keep_count_matches_the_exact_formula_on_a_grid():
    sparsities = [k / 8 for k in range(8)] + [0.05, 0.1, 0.15, 0.2, 0.3, 0.35, 0.45, 0.55, 0.7, 0.9, 0.99]
    for size in range(0, 301):
        for sparsity in sparsities:
            assert masks.keep_count(size, sparsity) == keep_formula_exact(size, sparsity), (size, sparsity)


def test_sparsity_after_rounds_values():
    assert masks.sparsity_after_rounds(0.2, 0) == 0.0
    assert masks.sparsity_after_rounds(0.5, 3) == 0.875
    assert masks.sparsity_after_rounds(0.2, 2) == pytest.approx(0.36, abs=1e-15)
    assert masks.sparsity_after_rounds(0.1, 20) == pytest.approx(1 - 0.9**20, abs=1e-15)


ROUND_SIZES = [1, 2, 3, 7, 10, 33, 100, 101, 999, 1000, 100 * 10, 300 * 100, 784 * 300, 3 * 3 * 64 * 64, 1_000_003]
ROUND_RATES = [0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.45, 0.5, 0.75]


@pytest.mark.parametrize("prune_rate", ROUND_RATES)
def test_remaining_after_r_rounds_is_round_half_up_for_every_round(prune_rate):
    for size in ROUND_SIZES + list(range(1, 120)):
        for rounds in range(0, 21):
            kept = masks.keep_count(size, masks.sparsity_after_rounds(prune_rate, rounds))
            assert kept == round_half_up_exact(size, prune_rate, rounds), (size, prune_rate, rounds)


@pytest.mark.parametrize(
    "size, prune_rate",
    [(1, 0.2), (7, 0.2), (100, 0.2), (784 * 300, 0.2), (7, 0.5), (300 * 100, 0.1), (3 * 3 * 64 * 64, 0.15)],
)
def test_imp_rounds_prune_exact_counts_with_previous_masks(size, prune_rate):
    """20 rounds of IMP on fresh scores each round: count from the round number, not compounded."""
    rng = np.random.default_rng(size)
    shape = (size,) if size < 100 else (size // 100, 100) if size % 100 == 0 else (size,)
    mask = None
    for rounds in range(1, 21):
        scores = {"w": rng.normal(size=shape)}
        previous = None if mask is None else {"w": mask}
        new = masks.compute(scores, masks.sparsity_after_rounds(prune_rate, rounds), previous_masks=previous)["w"]
        assert int(new.sum()) == round_half_up_exact(size, prune_rate, rounds), rounds
        if mask is not None:
            assert np.all(new <= mask)  # only shrinks
        mask = new


def test_compounding_would_differ_but_count_follows_round_number():
    """n=7, p=0.2: round 2 asks round(0.64*7)=round(4.48)=4 (compounding 6*0.8=4.8 would keep 5)."""
    scores = {"w": np.arange(7.0)}
    first = masks.compute(scores, masks.sparsity_after_rounds(0.2, 1))["w"]
    assert first.sum() == 6
    second = masks.compute(scores, masks.sparsity_after_rounds(0.2, 2), previous_masks={"w": first})["w"]
    assert second.sum() == 4
    np.testing.assert_array_equal(second, [0, 0, 0, 1, 1, 1, 1])


@pytest.mark.parametrize("rounds", [17, 20])
def test_remaining_after_many_rounds_at_high_rate(rounds):
    for size in (1, 7, 100, 784 * 300):
        kept = masks.keep_count(size, masks.sparsity_after_rounds(0.9, rounds))
        assert kept == round_half_up_exact(size, 0.9, rounds)


# ----------------------------------------------------------------------------------------
# Tie rule.


def test_all_equal_scores_keep_the_first_in_row_major_order():
    scores = np.ones((3, 4))
    for keep in range(0, 13):
        mask = masks.top_k_mask(scores, keep)
        expected = np.zeros(12, np.float32)
        expected[:keep] = 1
        np.testing.assert_array_equal(mask, expected.reshape(3, 4))


def test_ties_at_the_threshold_go_to_the_lower_flat_index():
    scores = np.array([[3.0, 1.0, 3.0], [1.0, 3.0, 1.0]])
    np.testing.assert_array_equal(masks.top_k_mask(scores, 2), [[1, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(masks.top_k_mask(scores, 3), [[1, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(masks.top_k_mask(scores, 4), [[1, 1, 1], [0, 1, 0]])
    np.testing.assert_array_equal(masks.top_k_mask(scores, 5), [[1, 1, 1], [1, 1, 0]])


def test_tie_rule_on_many_ties_matches_a_stable_sort():
    rng = np.random.default_rng(3)
    for trial in range(50):
        shape = (rng.integers(1, 9), rng.integers(1, 9), 3)
        scores = rng.integers(-2, 3, size=shape).astype(np.float64)  # 5 distinct values: many ties
        keep = int(rng.integers(0, scores.size + 1))
        flat = scores.ravel()
        order = np.lexsort((np.arange(flat.size), -flat))  # by score desc, then flat index asc
        expected = np.zeros(flat.size, np.float32)
        expected[order[:keep]] = 1
        np.testing.assert_array_equal(masks.top_k_mask(scores, keep), expected.reshape(shape), err_msg=str(trial))


def test_layerwise_compute_applies_the_tie_rule_per_layer():
    scores = {"a": np.full((2, 3), 5.0), "b": np.array([[2.0, 2.0], [2.0, 9.0]])}
    result = masks.compute(scores, 0.5)
    np.testing.assert_array_equal(result["a"], [[1, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(result["b"], [[1, 0], [0, 1]])


def test_global_ties_go_to_the_earlier_layer():
    scores = {"a": np.ones((2, 2)), "b": np.ones(4)}
    result = masks.compute(scores, 0.5, "global")
    np.testing.assert_array_equal(result["a"], np.ones((2, 2)))
    np.testing.assert_array_equal(result["b"], np.zeros(4))
    # Same scores in the other order: now 'b' comes first and wins every tie.
    swapped = masks.compute({"b": scores["b"], "a": scores["a"]}, 0.5, "global")
    assert list(swapped) == ["b", "a"]
    np.testing.assert_array_equal(swapped["b"], np.ones(4))
    np.testing.assert_array_equal(swapped["a"], np.zeros((2, 2)))
    # 0.25: 6 of 8 kept -> all of 'a' then the first two of 'b'.
    partial = masks.compute(scores, 0.25, "global")
    np.testing.assert_array_equal(partial["b"], [1, 1, 0, 0])


# ----------------------------------------------------------------------------------------
# Strategies.


def test_global_and_layerwise_differ_when_one_layer_is_larger():
    big = np.array([[4.0, 3.0], [2.0, 1.0]]) * 10.0
    small = np.array([0.4, 0.1, 0.3, 0.2, 0.5, 0.6])
    scores = {"big": big, "small": small}
    layerwise = masks.compute(scores, 0.5, "layerwise")
    np.testing.assert_array_equal(layerwise["big"], [[1, 1], [0, 0]])
    np.testing.assert_array_equal(layerwise["small"], [1, 0, 0, 0, 1, 1])  # 3 of 6: 0.4, 0.5, 0.6
    glob = masks.compute(scores, 0.5, "global")  # 5 of 10 kept: all 4 of big, the largest of small
    np.testing.assert_array_equal(glob["big"], np.ones((2, 2)))
    np.testing.assert_array_equal(glob["small"], [0, 0, 0, 0, 0, 1])


def test_layerwise_with_per_layer_sparsities():
    scores = {"a": np.arange(10.0), "b": np.arange(4.0)}
    result = masks.compute(scores, {"a": 0.2, "b": 0.5})
    np.testing.assert_array_equal(result["a"], [0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(result["b"], [0, 0, 1, 1])


def test_global_accepts_a_dict_of_equal_sparsities():
    scores = {"a": np.arange(4.0), "b": np.arange(4.0) + 10}
    result = masks.compute(scores, {"a": 0.5, "b": 0.5}, "global")
    np.testing.assert_array_equal(result["a"], np.zeros(4))
    np.testing.assert_array_equal(result["b"], np.ones(4))


def test_compute_keeps_keys_order_shapes_and_float32():
    scores = {"z": np.ones((3, 2)), "a": np.ones((2, 2, 2)), "m": np.ones(5)}
    for strategy in masks.STRATEGIES:
        result = masks.compute(scores, 0.4, strategy)
        assert list(result) == ["z", "a", "m"]
        for name in scores:
            assert result[name].shape == scores[name].shape
            assert result[name].dtype == np.float32
            assert set(np.unique(result[name])) <= {0.0, 1.0}
    assert masks.compute({}, 0.5, "global") == {}


# ----------------------------------------------------------------------------------------
# Masks only shrink.


def test_pruned_weights_never_revive_even_with_huge_scores():
    previous = {"w": np.array([[0, 1, 1], [1, 0, 1]], np.float32)}
    scores = {"w": np.array([[1e30, 1.0, 2.0], [3.0, 1e30, 4.0]])}
    result = masks.compute(scores, 0.5, previous_masks=previous)["w"]
    np.testing.assert_array_equal(result, [[0, 0, 1], [1, 0, 1]])


def test_target_below_current_sparsity_leaves_mask_unchanged():
    previous = {"w": np.array([1, 0, 0, 0, 1, 0, 0, 0], np.float32)}
    scores = {"w": np.arange(8.0)[::-1] * 100}  # would keep the first ones if allowed
    for sparsity in (0.0, 0.3, 0.5, 0.75):
        for strategy in masks.STRATEGIES:
            result = masks.compute(scores, sparsity, strategy, previous_masks=previous)["w"]
            np.testing.assert_array_equal(result, previous["w"])


def test_global_respects_previous_masks_across_layers():
    previous = {"a": np.array([0, 1, 1, 1], np.float32), "b": np.array([1, 1, 0, 0], np.float32)}
    scores = {"a": np.array([100.0, 1.0, 2.0, 3.0]), "b": np.array([4.0, 5.0, 99.0, 98.0])}
    result = masks.compute(scores, 0.5, "global", previous_masks=previous)
    # 4 of 8 kept among the 5 alive (1, 2, 3 | 4, 5): 5, 4, 3, 2.
    np.testing.assert_array_equal(result["a"], [0, 0, 1, 1])
    np.testing.assert_array_equal(result["b"], [1, 1, 0, 0])


def test_previous_masks_may_cover_only_some_layers():
    scores = {"a": np.arange(4.0), "b": np.arange(4.0)}
    result = masks.compute(scores, 0.5, previous_masks={"a": np.array([0, 0, 1, 0])})
    np.testing.assert_array_equal(result["a"], [0, 0, 1, 0])
    np.testing.assert_array_equal(result["b"], [0, 0, 1, 1])


def test_top_k_mask_alive_caps_keep():
    alive = np.array([True, False, True, False])
    np.testing.assert_array_equal(masks.top_k_mask([5.0, 9.0, 1.0, 8.0], 3, alive), [1, 0, 1, 0])
    np.testing.assert_array_equal(masks.top_k_mask([5.0, 9.0, 1.0, 8.0], 1, alive), [1, 0, 0, 0])


def test_top_k_mask_never_revives_a_dead_weight_that_ties_with_a_live_one():
    # A live weight scored -inf ties with the dead ones: the tie rule picks among the live only.
    alive = np.array([False, True, True, True])
    np.testing.assert_array_equal(masks.top_k_mask([-np.inf, 1.0, -np.inf, 2.0], 3, alive), [0, 1, 1, 1])


def test_top_k_mask_with_many_dead_weights_matches_a_stable_sort():
    rng = np.random.default_rng(0)
    scores = np.round(rng.standard_normal(5000), 1)  # many ties
    alive = rng.random(5000) < 0.3
    keep = 700
    order = np.argsort(-np.where(alive, scores, -np.inf), kind="stable")  # ties to the lower flat index
    expected = np.zeros(5000)
    expected[order[:keep]] = 1
    np.testing.assert_array_equal(masks.top_k_mask(scores, keep, alive), expected)


# ----------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize("sparsity", [1.5, -0.1, -1e-12, float("nan"), float("inf")])
def test_sparsity_outside_unit_interval_raises(sparsity):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        masks.compute({"w": np.ones(4)}, sparsity)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        masks.keep_count(4, sparsity)


def test_user_facing_sparsity_of_one_is_refused_but_the_mask_computation_accepts_it():
    # 1.0 only reaches the mask computation from float underflow of (1 - p) ** r.
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        masks.check_sparsity(1.0)
    assert masks.keep_count(4, 1.0) == 0
    assert masks.compute({"w": np.ones(4)}, 1.0)["w"].sum() == 0


def test_per_layer_sparsity_outside_unit_interval_names_the_layer():
    with pytest.raises(ValueError, match="'b'"):
        masks.compute({"a": np.ones(4), "b": np.ones(4)}, {"a": 0.5, "b": 1.5})


@pytest.mark.parametrize("sparsity", ["0.5", None, True])
def test_non_numeric_sparsity_raises_type_error(sparsity):
    with pytest.raises(TypeError):
        masks.compute({"w": np.ones(4)}, sparsity)


def test_nan_scores_raise():
    with pytest.raises(ValueError, match="NaN"):
        masks.compute({"w": np.array([1.0, np.nan, 2.0])}, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        masks.compute({"a": np.ones(2), "w": np.array([np.nan, 1.0])}, 0.5, "global")


def test_unknown_strategy_raises():
    with pytest.raises(ValueError, match="strategy"):
        masks.compute({"w": np.ones(4)}, 0.5, "per_channel")
    with pytest.raises(ValueError, match="strategy"):
        masks.check_strategy("Global")


def test_per_layer_sparsities_with_global_raise():
    with pytest.raises(ValueError, match="global"):
        masks.compute({"a": np.ones(4), "b": np.ones(4)}, {"a": 0.5, "b": 0.2}, "global")


def test_missing_per_layer_sparsity_raises():
    with pytest.raises(ValueError, match="b"):
        masks.compute({"a": np.ones(4), "b": np.ones(4)}, {"a": 0.5})


def test_previous_mask_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        masks.compute({"w": np.ones((2, 3))}, 0.5, previous_masks={"w": np.ones((3, 2))})
    with pytest.raises(ValueError, match="shape"):
        masks.compute({"w": np.ones((2, 3))}, 0.5, "global", previous_masks={"w": np.ones(6)})


# ----------------------------------------------------------------------------------------
# weights_remaining.


def test_weights_remaining_overall_and_per_layer():
    overall, per_layer = masks.weights_remaining(
        {"a": np.array([[1, 1], [1, 0]], np.float32), "b": np.array([0, 0, 1, 0, 0, 0], np.float32)}
    )
    assert overall == pytest.approx(0.4, abs=1e-15)
    assert per_layer == {"a": 0.75, "b": pytest.approx(1 / 6, abs=1e-15)}
    assert list(per_layer) == ["a", "b"]


def test_weights_remaining_of_computed_masks_and_empty():
    scores = {"a": np.arange(100.0), "b": np.arange(10.0)}
    overall, per_layer = masks.weights_remaining(masks.compute(scores, 0.7))
    assert per_layer == {"a": 0.3, "b": 0.3}
    assert overall == pytest.approx(0.3)
    assert masks.weights_remaining({}) == (1.0, {})


# ----------------------------------------------------------------------------------------
# criteria.py: the scores masks are computed from.


def test_magnitude_criterion_is_absolute_value():
    weights = {"a": np.array([[-3.0, 0.5], [0.0, -0.25]])}
    np.testing.assert_array_equal(criteria.magnitude(weights)["a"], [[3.0, 0.5], [0.0, 0.25]])


def test_random_criterion_is_seeded_and_shaped():
    weights = {"a": np.zeros((3, 4)), "b": np.zeros(5)}
    first = criteria.random(weights, np.random.default_rng(7))
    again = criteria.random(weights, np.random.default_rng(7))
    other = criteria.random(weights, np.random.default_rng(8))
    assert first["a"].shape == (3, 4) and first["b"].shape == (5,)
    np.testing.assert_array_equal(first["a"], again["a"])
    assert not np.array_equal(first["a"], other["a"])


def test_criteria_get():
    assert criteria.get("magnitude") is criteria.magnitude
    assert criteria.get("random") is criteria.random
    custom = lambda weights, rng: weights  # noqa: E731
    assert criteria.get(custom) is custom
    with pytest.raises(ValueError, match="magnitude"):
        criteria.get("gradient")


# ----------------------------------------------------------------------------------------
# Patterns: m-by-n and blocks, on the same tie rule.


def _groups(mask, n):
    """The kernel as TFLite lays it out, cut into groups of n input channels (the last one may be short)."""
    rows = mask.T if mask.ndim == 2 else mask.transpose(3, 0, 1, 2).reshape(-1, mask.shape[2])
    return [row[start:start + n] for row in rows for start in range(0, rows.shape[1], n)]


@pytest.mark.parametrize("shape", [(8, 3), (6, 5), (3, 3, 8, 4), (3, 3, 5, 2)])
@pytest.mark.parametrize("m, n", [(2, 4), (1, 2), (3, 4)])
def test_m_by_n_keeps_the_n_minus_m_highest_of_every_group(shape, m, n):
    scores = np.random.default_rng(0).normal(size=shape)
    mask = masks.compute({"w": scores}, 0.0, patterns={"w": masks.Pattern(m_by_n=(m, n))})["w"]
    for kept, values in zip(_groups(mask, n), _groups(scores, n)):
        assert kept.sum() == min(n - m, len(values))
        if len(values) > n - m:
            assert values[kept == 1].min() >= values[kept == 0].max()


def test_m_by_n_ties_go_to_the_lower_index_and_the_sparsity_asked_for_is_ignored():
    ones = np.ones((8, 2))
    for sparsity in (0.0, 0.9):
        mask = masks.compute({"w": ones}, sparsity, patterns={"w": masks.Pattern(m_by_n=(2, 4))})["w"]
        np.testing.assert_array_equal(mask[:, 0], [1, 1, 0, 0, 1, 1, 0, 0])


def test_m_by_n_masks_only_shrink_and_refuse_kernels_of_other_ranks():
    scores = np.arange(8.0)[:, None]
    previous = np.array([[1], [1], [1], [0], [1], [1], [1], [1]], np.float32)
    mask = masks.compute({"w": scores}, 0.0, previous_masks={"w": previous}, patterns={"w": masks.Pattern(m_by_n=(2, 4))})["w"]
    np.testing.assert_array_equal(mask[:, 0], [0, 1, 1, 0, 0, 0, 1, 1])  # the pruned 3 stays out
    with pytest.raises(ValueError, match="m-by-n sparsity needs a 2-D .* or 4-D"):
        masks.compute({"w": np.ones((3, 4, 2))}, 0.0, patterns={"w": masks.Pattern(m_by_n=(2, 4))})


@pytest.mark.parametrize("pooling", ["AVG", "MAX"])
def test_blocks_are_kept_whole_by_pooled_score_with_exact_block_counts(pooling):
    scores = np.random.default_rng(1).normal(size=(7, 10))  # 4 x 3 blocks of (2, 4), the edge ones partial
    mask = masks.compute({"w": scores}, 0.5, patterns={"w": masks.Pattern((2, 4), pooling)})["w"]
    blocks = [(r, c) for r in range(0, 7, 2) for c in range(0, 10, 4)]
    pooled = {(r, c): (np.mean if pooling == "AVG" else np.max)(scores[r:r + 2, c:c + 4]) for r, c in blocks}
    kept = {block for block in blocks if mask[block[0], block[1]] == 1}
    assert len(kept) == masks.keep_count(len(blocks), 0.5) == 6
    for r, c in blocks:
        assert np.all(mask[r:r + 2, c:c + 4] == ((r, c) in kept))  # whole blocks
    assert min(pooled[b] for b in kept) >= max(pooled[b] for b in set(blocks) - kept)


def test_structured_patterns_are_per_layer_only():
    with pytest.raises(ValueError, match="strategy='global'"):
        masks.compute({"w": np.ones((4, 4))}, 0.5, "global", patterns={"w": masks.Pattern(block_size=(2, 2))})
