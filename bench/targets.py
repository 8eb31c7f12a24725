"""Printed targets are comparisons computed from the figure measured, never words typed by hand.

    print(f"drawn at {fraction:.0%} of full training {targets.verdict(fraction, '<=', 0.2, '{:.0%}')}")
    # -> "drawn at 36% of full training: missed (target <= 20%)"
"""

import operator

_OPERATORS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


def met(value, comparison, target):
    """Whether `value comparison target` holds (comparison: '<=', '<', '>=' or '>')."""
    return _OPERATORS[comparison](value, target)


def verdict(value, comparison, target, form="{:g}"):
    """': met (target <= 0.5)' or ': missed (target <= 0.5)', the target written with `form`."""
    return f": {'met' if met(value, comparison, target) else 'missed'} (target {comparison} {form.format(target)})"


def within(value, tolerance, form="{:g}"):
    """': met (target within ±0.5)' when |value| <= tolerance, else ': missed (...)'."""
    return f": {'met' if abs(value) <= tolerance else 'missed'} (target within ±{form.format(tolerance)})"
