"""A sweep's report: aggregated learning curves as results.json, PNG and UI table."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from prefect import task  # noqa: E402
from prefect.artifacts import create_markdown_artifact, create_table_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.context import FlowRunContext  # noqa: E402

from alcore.config import digest  # noqa: E402
from alcore.stopping import DEFAULT_THRESHOLD_PCT  # noqa: E402
from alcore.sweep_stats import STOP_THRESHOLDS_PCT, mean_interval, stopping_summary, summarize  # noqa: E402
from tasks.report import data_uri, write_json  # noqa: E402


def sweep_folder(config) -> Path:
    """The sweep's own folder: ``<artifacts_dir>/sweep-<hash of the grid>``."""
    return Path(config.artifacts_dir).expanduser().resolve() / f"sweep-{config.sweep_hash()}"


def sweep_key(config) -> str:
    """The start of the sweep's artifact keys: a hash of its folder's path, so two
    artifact folders with the same sweep on one server do not share keys."""
    return f"sweep-{digest(str(sweep_folder(config)))[:10]}"


def collect(results: list[tuple[str, int, dict]]):
    """Curves (strategy -> seed -> (total labels used, accuracies)), the initial
    model's point included, and each strategy's passive accuracies at its label
    total (a reference that ran longer borrows the budget-matched passive baseline of
    another strategy of the same seed)."""
    curves, passive, budget_matched = {}, {}, {}
    for name, seed, r in results:
        held_out = r["labels"]["calibration_held_out"]
        labels = [r["config"]["n_initial"] + held_out, *r["labels_used_per_round"]]
        acc = [r["initial_accuracy"], *r["active_accuracy"]]
        curves.setdefault(name, {})[seed] = (labels, acc)
        if r["passive_accuracy"] is not None:
            passive.setdefault(name, {})[seed] = r["passive_accuracy"]
            if r["config"]["acquisition_batch"] == 1:
                budget_matched[seed] = r["passive_accuracy"]
    for name in curves:
        if name not in passive:
            passive[name] = {s: budget_matched[s] for s in curves[name] if s in budget_matched}
    return curves, passive


def stopping(results: list[tuple[str, int, dict]], thresholds=STOP_THRESHOLDS_PCT) -> dict[str, dict[str, dict]]:
    """Per strategy and threshold (percent, as text): the stop rule evaluated on every
    seed's finished run against its full budget (``alcore.sweep_stats.stopping_summary``)."""
    runs: dict[str, dict[int, dict]] = {}
    for name, seed, r in results:
        runs.setdefault(name, {})[seed] = {
            "changes": r["prediction_change_per_round"],
            "accuracy": r["active_accuracy"],
            "labels": r["labels_used_per_round"],
        }
    return {name: {f"{t:g}": stopping_summary(by_seed, t) for t in thresholds} for name, by_seed in runs.items()}


def stop_line(name: str, s: dict) -> str:
    """The stop rule's result for one strategy, in one line."""
    given, worst = s["accuracy_given_up_pts"], s["worst_accuracy_given_up_pts"]
    given = "n/a" if given is None else f"{given['mean']:.2f}"
    worst = "n/a" if worst is None else f"{worst:.2f}"
    return (
        f"{name}: stopping when under {s['threshold_pct']:g} % of the pool changed per round (last 3 rounds) "
        f"stopped {s['stopped']}/{s['of']} runs early, saved {100 * s['labels_saved_share']['mean']:.0f} % of the "
        f"labels and gave up {given} points of accuracy on average (worst seed {worst}); "
        f"goal (<= 1 point, >= 30 % fewer labels) {'met' if s['goal_met'] else 'not met'}"
    )


def totals(results: list[tuple[str, int, dict]]) -> dict[str, dict]:
    """Each strategy's label totals (the same for every seed): active and passive."""
    out = {}
    for name, _, r in results:
        out[name] = {"active": r["labels"]["active_total"], "passive": r["labels"]["passive_total"]}
    return out


def _fmt(stat: dict, pct=True) -> str:
    scale = 100 if pct else 1
    return f"{scale * stat['mean']:.2f} ± {scale * stat['ci95']:.2f}"


def table_rows(
    summary: dict, passive_row: dict, label_totals: dict, passive_total: int | None, stops: dict | None = None
) -> list[dict]:
    rows = []
    default = f"{DEFAULT_THRESHOLD_PCT:g}"
    for name, s in summary.items():
        stop = (stops or {}).get(name, {}).get(default)
        given = None if stop is None else stop["accuracy_given_up_pts"]
        rows.append(
            {
                "strategy": name,
                "labels": label_totals[name]["active"],
                "final_accuracy_pct": _fmt(s["final_accuracy"]),
                "labels_to_90": _reach(s["labels_to_90"]),
                "labels_to_95": _reach(s["labels_to_95"]),
                "auc_pct": _fmt(s["auc"]),
                "win_vs_random": "-" if s["win_rate_vs_reference"] is None else f"{s['win_rate_vs_reference']:.2f}",
                "win_vs_passive": "-" if s["win_rate_vs_passive"] is None else f"{s['win_rate_vs_passive']:.2f}",
                "stop_labels_saved_pct": "-" if stop is None else _fmt(stop["labels_saved_share"]),
                "stop_accuracy_given_up_pts": "-" if given is None else _fmt(given, pct=False),
            }
        )
    rows.append(
        {
            "strategy": "passive (budget-matched)",
            "labels": passive_total,
            "final_accuracy_pct": _fmt(passive_row),
            "labels_to_90": "-",
            "labels_to_95": "-",
            "auc_pct": "-",
            "win_vs_random": "-",
            "win_vs_passive": "-",
            "stop_labels_saved_pct": "-",
            "stop_accuracy_given_up_pts": "-",
        }
    )
    return rows


def _reach(r: dict) -> str:
    return f"{r['mean']:.1f} ({r['reached']}/{r['of']})" if r["mean"] is not None else f"never (0/{r['of']})"


def curves_plot(path: Path, summary: dict, passive_row: dict, budget: int, passive_total: int | None) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for name, s in summary.items():
        x = np.asarray(s["labels"])
        m, h = 100 * np.asarray(s["curve_mean"]), 100 * np.asarray(s["curve_ci95"])
        (line,) = ax.plot(x, m, label=f"{name} (n={len(s['seeds'])})", marker="." if len(x) < 20 else None)
        ax.fill_between(x, m - h, m + h, color=line.get_color(), alpha=0.15)
    pm, ph = 100 * passive_row["mean"], 100 * passive_row["ci95"]
    if passive_total is not None:
        ax.errorbar(
            [passive_total], [pm], yerr=[ph], fmt="ks", capsize=4, label=f"passive baseline ({passive_total} labels)"
        )
    for level in (90, 95):
        ax.axhline(level, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("labels used (every label counted)")
    ax.set_ylabel("test accuracy [%] (mean, 95 % interval)")
    ax.set_title(f"Learning curves across seeds (budget {budget} acquired labels)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


@task(name="sweep-report", task_run_name="sweep/aggregate-and-report", cache_policy=NO_CACHE)
def sweep_report(config, results: list[tuple[str, int, dict]], wall_seconds: float, started_at: float) -> dict:
    """Aggregate the experiments; write results.json and the learning curves; publish."""
    folder = sweep_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    curves, passive = collect(results)
    summary = summarize(curves, passive, reference="random" if "random" in curves else None)
    label_totals = totals(results)
    baseline = min(passive, key=lambda name: int(name.partition(":k")[2] or 1))  # smallest k: the standard budget
    passive_row = dict(zip(("mean", "ci95"), mean_interval(list(passive[baseline].values())), strict=True))
    passive_total = next((t["passive"] for t in label_totals.values() if t["passive"] is not None), None)
    plot = curves_plot(folder / "learning_curves.png", summary, passive_row, config.label_budget, passive_total)
    stops = stopping(results)
    rows = table_rows(summary, passive_row, label_totals, passive_total, stops)
    stop_lines = [stop_line(name, by_threshold[f"{DEFAULT_THRESHOLD_PCT:g}"]) for name, by_threshold in stops.items()]
    document = {
        "config": config.model_dump(),
        "summary": summary,
        "passive": {"per_strategy": passive, "baseline": passive_row, "labels": passive_total},
        "labels": label_totals,
        "protocol": config.protocol,
        "experiments": [
            {
                "strategy": n,
                "seed": s,
                "final_accuracy": r["active_accuracy"][-1],
                "rounds": len(r["active_accuracy"]),
                "passive_accuracy": r["passive_accuracy"],
                "compute_seconds": r["compute_seconds"],
                "labels": r["labels"],
                "wall_seconds": r["wall_seconds"],
                "flow_seconds": r["flow_seconds"],
                "started_at": r["started_at"],
                "finished_at": r["finished_at"],
                "worker_pid": r["worker_pid"],
            }
            for n, s, r in results
        ],
        "table": rows,
        # the stop rule after the fact, per strategy and threshold (percent), against the full budget
        "stopping": stops,
        "stopping_lines": stop_lines,
        "wall_seconds": wall_seconds,
        "started_at": started_at,
        "flow_run_id": str(FlowRunContext.get().flow_run.id),
        "files": {"learning_curves": str(plot)},
    }
    write_json(folder / "results.json", document)
    key = sweep_key(config)
    create_table_artifact(key=f"{key}-summary", table=rows, description="Strategies across seeds")
    create_markdown_artifact(
        key=f"{key}-curves",
        markdown=f"# Learning curves\n\n![curves]({data_uri(plot)})\n\n## When to stop\n\n"
        + "\n".join(f"- {line}" for line in stop_lines)
        + "\n",
        description="Learning curves, mean and 95 % interval across seeds",
    )
    return {"folder": str(folder), "wall_seconds": wall_seconds, "table": rows, "stopping_lines": stop_lines}
