"""The spacing of a round's evaluations: never more than asked, the round's length kept where it can be."""

import pytest

from keras_lottery.experiments import rounds


@pytest.mark.parametrize("iterations, evaluations, interval, checks", [
    (2000, 20, 100, 20),  # divisible: as asked
    (2001, 20, 100, 20),  # one iteration short of another check: as before
    (50, 20, 5, 10),  # every 2 steps would be 25 checks; 3 does not divide 50, 5 does and keeps half
    (53, 20, 3, 17),  # prime: no divisor keeps half the checks; 17 checks, 51 of the 53 iterations
    (10, 20, 1, 10),  # fewer iterations than checks: one per iteration
])
def test_evaluation_spacing_never_exceeds_the_checks_asked(iterations, evaluations, interval, checks):
    assert rounds.evaluation_spacing(iterations, evaluations) == interval
    assert iterations // interval == checks <= evaluations
