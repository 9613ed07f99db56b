"""Which backend serves an index, from measurements: the selection policy.

``auto``: the fastest setting of any strategy that reaches the target recall, or exact
search when that is faster (a choice by measured speed). A backend family (``annoy``):
the first strategy reaching the target (a choice by recall only, so re-runs give the
same files), else the best recall of the first.
"""

from __future__ import annotations

from typing import Any

from recsys.index.base import Sweep


def choose(sweeps: list[tuple[str, Sweep]], backend: str, target: float, k: int) -> dict[str, Any]:
    """Entry fields (``backend``, its setting, ``reason``) from the sweeps of each
    strategy, in order of preference."""
    reached = []
    for name, sweep in sweeps:
        if sweep.chosen is not None:
            point = sweep.point(sweep.chosen)
            reached.append((point["queries_per_second"], name, sweep))
    exact_qps = sweeps[0][1].exact_queries_per_second
    if reached:
        qps, name, sweep = max(reached, key=lambda r: r[0]) if backend == "auto" else reached[0]
        setting, value = sweep.setting, sweep.chosen
        if backend != "auto" or qps > exact_qps:
            slower = "" if qps > exact_qps else f"; exact search is faster here ({exact_qps:.0f} queries/s)"
            return {
                "backend": name,
                setting: value,
                "reason": f"fastest setting reaching recall@{k} {target}: {setting} {value} "
                f"at {qps:.0f} queries/s{slower}",
            }
        return {
            "backend": "exact",
            "reason": f"Annoy reaches recall@{k} {target} at best {qps:.0f} queries/s ({name}, {setting} "
            f"{value}), exact search is faster ({exact_qps:.0f} queries/s)",
        }
    if backend != "auto":
        name, sweep = sweeps[0]
        best = max(sweep.curve, key=lambda p: p["recall_at_k"])
        return {
            "backend": name,
            sweep.setting: int(best[sweep.setting]),
            "reason": f"no setting reached recall@{k} {target}; best was {best['recall_at_k']:.3f}",
        }
    return {
        "backend": "exact",
        "reason": f"no setting reached recall@{k} {target} while faster than exact search",
    }
