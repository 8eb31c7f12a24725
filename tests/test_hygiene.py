"""Tests of the tests: an expected-error pattern that matches any message checks nothing.

`pytest.raises(..., match=p)` passes for every message when `p` matches the empty string
(an unescaped `|` at its edge does it: `match="max |difference|"` was one). Every literal
`match=` pattern in tests/ and every message pattern of the bad-input catalogue must
need some text to match.
"""

import ast
import pathlib
import re

import pytest

from tests import test_bad_inputs

TESTS = pathlib.Path(__file__).resolve().parent


def _match_patterns():
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.keyword) and node.arg == "match" and isinstance(node.value, ast.Constant) \
                    and isinstance(node.value.value, str):
                yield f"{path.relative_to(TESTS)}:{node.value.lineno}", node.value.value


@pytest.mark.parametrize("where, pattern", list(_match_patterns()))
def test_match_patterns_need_some_text(where, pattern):
    assert re.search(pattern, "") is None, f"{where}: match={pattern!r} matches any message (escape its | . * ?)"


@pytest.mark.parametrize("case", test_bad_inputs.CASES, ids=[case[0] for case in test_bad_inputs.CASES])
def test_catalogue_patterns_need_some_text(case):
    assert re.search(case[4], "", re.DOTALL | re.IGNORECASE) is None, f"{case[0]}: {case[4]!r} matches any message"


def test_the_check_sees_a_pattern_that_matches_anything():
    assert re.search("max |difference|", "") is not None  # the pattern this module was written for
    assert re.search(r"max \|difference\|", "") is None
