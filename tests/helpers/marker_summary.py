"""The run's closing tally by marker: how much of the green ran on real servers.

A run of 600 passes says little until one sees that most were ``unit``; the table
at the end splits passed / failed / skipped / error by the suite's markers. Each
test counts under its first marker in :data:`MARKERS` (``unmarked`` if none); a
setup or teardown failure counts as an error, like pytest's own summary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import pytest

MARKERS = ("node", "chaos", "e2e", "integration", "unit")
OUTCOMES = ("passed", "failed", "skipped", "error")
UNMARKED = "unmarked"


def category(keywords: Mapping[str, object]) -> str:
    """The marker a test counts under, from its report's keywords."""
    return next((name for name in MARKERS if name in keywords), UNMARKED)


def outcome(report: pytest.TestReport) -> str | None:
    """What one phase's report adds to the tally (None: nothing, e.g. a passing setup)."""
    if report.when == "call":
        return report.outcome
    if report.failed:
        return "error"
    if report.skipped and report.when == "setup":
        return "skipped"
    return None


def format_summary(counts: Counter[tuple[str, str]], markers: tuple[str, ...]) -> list[str]:
    """The table's lines: one row per marker (each given one, and ``unmarked`` if any)."""
    rows = [*markers, *([UNMARKED] if any(m == UNMARKED for m, _ in counts) else [])]
    width = max(len(row) for row in [*rows, "total"])
    lines = [f"{'marker':<{width}}  " + "  ".join(f"{o:>7}" for o in OUTCOMES)]
    for row in [*rows, "total"]:
        cells = [
            sum(n for (m, o), n in counts.items() if o == out and row in (m, "total"))
            for out in OUTCOMES
        ]
        lines.append(f"{row:<{width}}  " + "  ".join(f"{c:>7}" for c in cells))
    return lines


class MarkerSummary:
    """Counts reports as they come in; writes the table at the end of the run."""

    def __init__(self, markers: tuple[str, ...]) -> None:
        self.markers = markers
        self.counts: Counter[tuple[str, str]] = Counter()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        added = outcome(report)
        if added is not None:
            self.counts[category(report.keywords), added] += 1

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.counts:
            return
        terminalreporter.write_sep("-", "tests by marker")
        for line in format_summary(self.counts, self.markers):
            terminalreporter.write_line(line)


def pytest_configure(config: pytest.Config) -> None:
    # Rows for the markers this project declares (``node`` may not exist yet), the
    # quickest first.
    declared = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    markers = tuple(m for m in reversed(MARKERS) if m in declared)
    config.pluginmanager.register(MarkerSummary(markers), "marker-summary")
