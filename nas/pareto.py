"""A study's Pareto front, its hypervolume, and the files regenerated from it: pareto.json, trials.csv, pareto.png."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.trial import FrozenTrial

from nas.drift import FRONT_ATTR
from nas.early_stop import dominates, interval_difference_low
from nas.front import front_score, pareto_front, refinements
from nas.search import quality_record, trial_record

Key = TypeVar("Key")
FOOTPRINT_COLUMNS = {"size": "size_bytes", "memory": "peak_memory_bytes"}  # a third objective's trial_record key
# The quality columns of a front's table: image classifiers', or text encoders'.
# latency_ms is normalised to the canary baseline, so the raw median stands beside it (a raw p90 there could read
# below the normalised median)
TABLE_COLUMNS = {"accuracy": ("trial", "accuracy", "agreement", "latency_ms", "latency_raw_ms", "params", "macs"),
                 "cosine": ("trial", "cosine", "neighbour_agreement", "latency_ms", "latency_raw_ms", "params", "macs")}


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The most accurate feasible trial (the fastest among equals); refined students count with their refined score."""
    front, refined = pareto_front(study), refinements(study)
    if not front:
        raise ValueError(f"Study {study.study_name!r} has no feasible trained trial yet.")
    return max(front, key=lambda t: (front_score(t, refined), -t.values[1]))


def hypervolume(points: Iterable[tuple[float, float]], reference: tuple[float, float]) -> float:
    """The area that ``(score, latency)`` points dominate (score maximised, latency minimised) up to ``reference``.

    ``reference`` is the worst ``(score, latency)`` that counts, e.g. ``(0.0, latency budget)``: the area lies
    above its score and left of its latency, so points not better than it in both add nothing.
    """
    ref_score, ref_latency = reference
    inside = sorted((latency, score) for score, latency in points if score > ref_score and latency < ref_latency)
    area, best = 0.0, ref_score
    for (latency, score), right in zip(inside, [latency for latency, _ in inside[1:]] + [ref_latency]):
        best = max(best, score)
        area += (right - latency) * (best - ref_score)
    return area



def non_dominated(points: Mapping[Key, tuple[float, ...]]) -> set[Key]:
    """The keys of the points no other point dominates (score maximised, costs minimised: :func:`dominates`)."""
    return {key for key, point in points.items() if not any(dominates(other, point) for other in points.values())}


def front_records(study: optuna.Study) -> list[dict[str, Any]]:
    """The front's trials as pareto.json shows them, each with its latency measured together with the others
    (``latency_front_ms``: the median over interleaved rounds, normalised; None before that measurement).

    A refined student (``nas.refine``) shows its refined ``score`` and quality metrics, its trial's short score as
    ``score_short`` and the refinement's steps as ``refined_steps``; an unrefined one has ``score_short == score``.
    ``lead_low`` is how far it is ahead of the front's students at most as costly, beyond the noise (:func:`lead_low`).
    """
    together = study.user_attrs.get(FRONT_ATTR, {}).get("trials", {})
    refined = refinements(study)
    front = pareto_front(study)
    records = []
    for trial in front:
        record = {key: value for key, value in trial_record(trial).items() if key not in ("state", "failure")}
        short, refinement = record["score"], refined.get(trial.user_attrs.get("arch_hash", ""))
        if refinement is not None:
            record.update(quality_record(refinement["metrics"]), score=refinement["score"])
        records.append({**record, "score_short": short,
                        "refined_steps": None if refinement is None else refinement["steps"],
                        "latency_front_ms": together.get(str(trial.number), {}).get("fastest_ms")})
    costs = [trial.values[1:] for trial in front]  # latency, and a third objective's footprint
    for record, cost in zip(records, costs):
        record["lead_low"] = lead_low(record, [other for other, other_cost in zip(records, costs) if other is not record
                                               and all(o <= c for o, c in zip(other_cost, cost))])
    return records


def lead_low(record: dict[str, Any], cheaper: list[dict[str, Any]]) -> float | None:
    """The lower end of the 95% interval of ``record``'s accuracy lead over each of the ``cheaper`` front students
    (at most as costly in every cost), the smallest of them, from their validation accuracies' intervals: above 0,
    it is more accurate than all of them beyond the noise; at or below 0, one of them may be as accurate. None for
    the cheapest student, or where a record has no interval (a text student's cosine)."""
    if not cheaper or any(r["accuracy_ci95"] is None for r in (record, *cheaper)):
        return None
    return min(interval_difference_low(record["accuracy"], record["accuracy_ci95"][0],
                                       other["accuracy"], other["accuracy_ci95"][1]) for other in cheaper)


def noise_note(records: list[dict[str, Any]]) -> str | None:
    """A line naming the front students that lead a cheaper one by less than the validation noise, if any."""
    within = [str(r["trial"]) for r in records if r["lead_low"] is not None and r["lead_low"] <= 0]
    if not within:
        return None
    return (f"Within the validation noise of a faster (or smaller) front student: trial{'s' * (len(within) > 1)} "
            f"{', '.join(within)} (the 95% interval of the accuracy lead reaches 0; pareto.json: lead_low).")


def metric_of(study: optuna.Study) -> str:
    return study.user_attrs.get("metric", "accuracy")


def write_outputs(study: optuna.Study, out_dir: str | Path, latency_budget_ms: float | None) -> list[dict[str, Any]]:
    """Regenerate every view of the study in ``out_dir``; returns the front's records."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    front = front_records(study)
    (out_dir / "pareto.json").write_text(json.dumps(front, indent=2) + "\n")
    records = [trial_record(t) for t in study.get_trials(deepcopy=False)]
    _write_csv(records, out_dir / "trials.csv")
    config = study.user_attrs.get("config", {})
    footprint = (config.get("objectives") or "").split(",")[2:]  # a third objective: pareto.png adds its projection
    axes = [("latency_ms", "latency (ms, median)", latency_budget_ms, "ms"),
            *((FOOTPRINT_COLUMNS[name], f"{name} (bytes)", config.get(f"{name}_budget_bytes"), "bytes")
              for name in footprint)]
    _plot(records, front, axes, metric_of(study), out_dir / "pareto.png")
    return front


def format_table(records: list[dict[str, Any]], metric: str = "accuracy") -> str:
    """A fixed-width table of front records."""
    columns = TABLE_COLUMNS[metric]
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}"
        return "-" if value is None else str(value)

    rows = [list(columns)] + [[cell(r[c]) for c in columns] for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows)


def _write_csv(records: list[dict[str, Any]], path: Path) -> None:
    if not records:
        path.write_text("")
        return
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        for record in records:
            writer.writerow({key: json.dumps(value) if isinstance(value, (dict, list)) else value
                             for key, value in record.items()})


def _plot(records: list[dict[str, Any]], front: list[dict[str, Any]],
          axes: list[tuple[str, str, float | None, str]], metric: str, path: Path) -> None:
    """The score against each of ``axes`` (record key, label, budget, unit): one panel for two objectives, a 2-D
    projection per cost for three (the front's staircase only where it is a 2-D front)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = [r for r in records if r["score"] is not None and r["status"] in ("trained", "trained_over_budget")]
    stopped = [r for r in records if r["status"] == "stopped_early"]
    over = [r for r in records if r["status"] == "over_budget"]
    fig, panels = plt.subplots(1, len(axes), figsize=(7 * len(axes), 4.5), squeeze=False)
    for ax, (key, label, budget, unit) in zip(panels[0], axes):
        ax.scatter([r[key] for r in trained], [r["score"] for r in trained], s=18, c="0.6", label="trained")
        if front:
            if len(axes) == 1:
                ax.step([r[key] for r in front], [r["score"] for r in front], where="post", c="tab:red", lw=1)
            ax.scatter([r[key] for r in front], [r["score"] for r in front], s=36, c="tab:red",
                       label="Pareto front", zorder=3)
        if stopped:
            ax.scatter([r[key] for r in stopped], [r["score"] for r in stopped], s=14, marker="v", c="0.8",
                       label=f"stopped early ({metric} at the stop)")
        if over:
            bottom = min((r["score"] for r in trained), default=0.0)
            ax.scatter([r[key] for r in over], [bottom] * len(over), marker="x", c="0.3",
                       label="over budget (not trained)")
        if budget is not None:
            ax.axvline(budget, ls="--", c="tab:blue", label=f"budget {budget} {unit}")
        ax.set_xlabel(label)
        ax.set_ylabel(f"validation {metric}")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
