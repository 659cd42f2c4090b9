"""`saga-devenv status | head -1`: the reader leaves early, and that is no error."""

from __future__ import annotations

import subprocess
import sys


def test_status_into_a_reader_that_leaves_prints_no_traceback() -> None:
    status = subprocess.Popen(
        [sys.executable, "-m", "saga_devenv.cli", "status"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert status.stdout is not None and status.stderr is not None
    status.stdout.close()  # as `head` does once it has what it wants
    errors = status.stderr.read().decode()
    assert status.wait(timeout=60) == 141, errors
    assert "Traceback" not in errors, errors
