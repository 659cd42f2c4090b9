"""The closing tally by marker (tests/helpers/marker_summary.py), on a real inner pytest run."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\nmarkers =\n    unit: u\n"
INNER = """
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("no server")

@pytest.mark.unit
def test_unit_passes(): pass

@pytest.mark.unit
def test_unit_fails(): assert False

@pytest.mark.integration
def test_integration_errors(broken): pass

@pytest.mark.e2e
def test_e2e_skipped(): pytest.skip("no system")

@pytest.mark.chaos
@pytest.mark.integration
def test_chaos_counts_once(): pass

def test_without_marker(): pass
"""


def test_tally_splits_outcomes_by_marker(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI + "    integration: i\n    e2e: e\n    chaos: c\n")
    pytester.makepyfile(INNER)
    result = pytester.runpytest("-p", "tests.helpers.marker_summary")
    result.assert_outcomes(passed=3, failed=1, skipped=1, errors=1)
    result.stdout.re_match_lines(
        [
            r".* tests by marker .*",
            r"marker\s+passed\s+failed\s+skipped\s+error$",
            r"unit\s+1\s+1\s+0\s+0$",
            r"integration\s+0\s+0\s+0\s+1$",
            r"e2e\s+0\s+0\s+1\s+0$",
            r"chaos\s+1\s+0\s+0\s+0$",
            r"unmarked\s+1\s+0\s+0\s+0$",
            r"total\s+3\s+1\s+1\s+1$",
        ]
    )
    assert "node " not in result.stdout.str()  # not declared here: no row


def test_teardown_failure_counts_as_an_error_besides_the_pass(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def leaky():
            yield
            raise RuntimeError("cleanup failed")

        @pytest.mark.unit
        def test_passes_then_teardown_fails(leaky): pass
        """
    )
    result = pytester.runpytest("-p", "tests.helpers.marker_summary")
    result.stdout.re_match_lines([r"unit\s+1\s+0\s+0\s+1$", r"total\s+1\s+0\s+0\s+1$"])
