"""What the side-by-side benchmarks share: a median after a warm-up, and the table of
our time, DCMTK's and the ratio (or the same rows as JSON)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from typing import Any


def median_after_warmup(runs: int, once: Callable[[], float]) -> float:
    """The median of ``runs`` timed calls, after one untimed (caches, first association)."""
    once()
    return statistics.median(once() for _ in range(runs))


def ratio_row(metric: str, ours: float, dcmtk: float) -> dict[str, Any]:
    """One row of the table: the ratio is always ours over DCMTK's."""
    return {"metric": metric, "ours": ours, "dcmtk": dcmtk, "ratio": ours / dcmtk}


def print_rows(rows: Sequence[dict[str, Any]], as_json: bool, width: int = 75) -> None:
    if as_json:
        print(json.dumps(list(rows), indent=2))
        return
    print(f"{'metric':<{width}} {'ours s':>8} {'DCMTK s':>8} {'ratio':>6}")
    for row in rows:
        print(f"{row['metric']:<{width}} {row['ours']:>8.2f} {row['dcmtk']:>8.2f} "
              f"{row['ratio']:>6.2f}")
