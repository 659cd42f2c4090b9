"""Plot POST -> Snap token latency percentiles against arrival rate.

Reads the JSON ``saga_bench.py --json`` writes and draws p50/p90/p99/max (log scale)
per open-loop rate, with the share of POSTs that got a payment link noted at each
rate. It needs only the standard library and matplotlib, which is not a dependency of
the project: install it into a virtualenv of its own (the project's stays as locked):

    python3 -m venv /tmp/plot-env && /tmp/plot-env/bin/pip install matplotlib
    /tmp/plot-env/bin/python benchmarks/plot_latency.py out.json docs/perf-latency.png
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

SERIES = ("p50", "p90", "p99", "max")


def plot(document: dict[str, Any], target: Path) -> None:
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")  # no display needed
    pyplot = importlib.import_module("matplotlib.pyplot")
    runs = sorted(document["open_loop"], key=lambda r: r["rate"])
    rates = [r["rate"] for r in runs]
    figure, axes = pyplot.subplots(figsize=(7, 4.5), dpi=120)
    for name in SERIES:
        points = [(r["rate"], r[name] * 1000) for r in runs if r.get(name) is not None]
        if points:
            axes.plot(*zip(*points, strict=True), marker="o", label=name)
    for run in runs:
        sent = sum(run["outcomes"].values())
        linked = run["outcomes"].get("link", 0)
        if run.get("max") is not None:
            axes.annotate(
                f"{linked}/{sent} got a link",
                (run["rate"], run["max"] * 1000),
                textcoords="offset points",
                xytext=(0, 8),
                ha="center",
                fontsize=8,
            )
    axes.set_yscale("log")
    axes.margins(x=0.08, y=0.15)  # room for the notes above the highest points
    axes.set_xticks(rates)
    axes.set_xlabel("arrival rate, POSTs per second (open loop)")
    axes.set_ylabel("POST -> payment link, ms")
    results = document["results"]
    load = "/".join(f"{v:.1f}" for v in results["load_start"])
    axes.set_title(
        f"Checkout POST latency, {results['cpus']} CPUs, loadavg {load} at start "
        f"({results['started']})",
        fontsize=9,
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("json", type=Path, help="written by saga_bench.py --json")
    parser.add_argument("png", type=Path, nargs="?", default=Path("docs/perf-latency.png"))
    args = parser.parse_args(argv)
    try:
        plot(json.loads(args.json.read_text()), args.png)
    except ModuleNotFoundError as exc:
        print(f"{exc}: see the instructions at the top of {__file__}", file=sys.stderr)
        return 2
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
