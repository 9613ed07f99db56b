"""Which backend serves an index, from measurements: the selection policy.

``auto`` with :class:`Costs`: the strategy reaching the target recall whose whole cost
(build + probe + serving the run's queries at its measured speed) is the least, or exact
search (its serving time alone) when that costs less. ``auto`` without costs: the fastest
setting reaching the target, or exact search when that is faster. A backend family
(``annoy``): the first strategy reaching the target (a choice by recall only, so re-runs
give the same files), else the best recall of the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from recsys.index.base import Sweep


@dataclass(frozen=True)
class Costs:
    """What an index costs the run, in seconds, per strategy: ``build`` and ``probe``
    measured (or the estimate of a build never made), ``served`` the queries the run
    will ask the index (users to recommend for, items to list similar items of)."""

    served: int
    exact_queries_per_second: float
    build: dict[str, float] = field(default_factory=dict)
    probe: dict[str, float] = field(default_factory=dict)

    def serve(self, queries_per_second: float) -> float:
        return self.served / max(queries_per_second, 1e-9)

    def total(self, name: str, queries_per_second: float) -> float:
        return self.build.get(name, 0.0) + self.probe.get(name, 0.0) + self.serve(queries_per_second)


def choose_by_cost(sweeps: list[tuple[str, Sweep]], costs: Costs, target: float, k: int) -> dict[str, Any]:
    """``auto``'s choice: the least whole cost among the strategies reaching the target
    recall and exact search's serving time; the reason states the three times of the
    choice and exact search's."""
    exact_qps = costs.exact_queries_per_second
    exact = costs.serve(exact_qps)
    exact_says = f"exact {exact:.1f} s serve ({costs.served} queries at {exact_qps:.0f}/s)"
    best = None
    for name, sweep in sweeps:
        if sweep.chosen is None:
            continue
        qps = sweep.point(sweep.chosen)["queries_per_second"]
        total = costs.total(name, qps)
        if best is None or total < best[0]:
            best = (total, name, sweep, qps)
    if best is None:
        return {"backend": "exact", "reason": f"no setting reached recall@{k} {target}; {exact_says}"}
    total, name, sweep, qps = best
    says = (
        f"{name}: build {costs.build.get(name, 0.0):.1f} s + probe {costs.probe.get(name, 0.0):.1f} s + "
        f"serve {costs.serve(qps):.1f} s = {total:.1f} s"
    )
    if total >= exact:
        return {"backend": "exact", "reason": f"{exact_says} <= {says} (recall@{k} {target})"}
    return {
        "backend": name,
        sweep.setting: sweep.chosen,
        "reason": f"{says} < {exact_says}; recall@{k} {target} at {sweep.setting} {sweep.chosen}",
    }


def choose(
    sweeps: list[tuple[str, Sweep]], backend: str, target: float, k: int, costs: Costs | None = None
) -> dict[str, Any]:
    """Entry fields (``backend``, its setting, ``reason``) from the sweeps of each
    strategy, in order of preference; ``auto`` with ``costs`` chooses by whole cost."""
    if backend == "auto" and costs is not None:
        return choose_by_cost(sweeps, costs, target, k)
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
