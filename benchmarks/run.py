"""Speed benchmark: the tutorial's procedure vs this project's, in one process.

    python -m benchmarks.run [--out artifacts/benchmark.json] [--seeds 5] [--skip-tutorial-loop]

Prints a table and writes JSON. Ratios are computed within this one run (these
machines are noisy: compare only figures from the same invocation).
"""

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import sources
from alcore import acquisition, experiment, laplace, laplax_path, problem, stages
from alcore.config import ExperimentConfig
from benchmarks import tutorial, write_json

ROOT = Path(__file__).resolve().parent.parent


class CompileCounter(logging.Handler):
    """Counts XLA compilations (``jax_log_compiles`` log records)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def emit(self, record):
        if "Compiling" in record.getMessage():
            self.count += 1


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    jax.block_until_ready(out)
    return out, time.perf_counter() - t0


def labelled_set(cfg, data, state, prior, n_rounds):
    """Run the project's loop for n_rounds to get a realistic larger labelled set."""
    x, y = data.x_initial, data.y_initial
    for _ in range(n_rounds):
        preds = experiment.predict(state.params, data.pool)
        scores = experiment.uncertainty_map(state.params, x, y, data.pool, preds, prior_prec=prior, curvature="full")
        p = data.pool[int(np.argmax(scores))]
        x = np.concatenate([x, p[None]])
        y = np.concatenate([y, [int(problem.true_label(p))]])
        state, _ = experiment.retrain(
            state, x, y, learning_rate=cfg.learning_rate, epochs=cfg.epochs_per_round, batch_size=cfg.batch_size
        )
    return state, x, y


def std_map_comparison(state, x, y, grid, prior):
    """Uncertainty map, all classes: laplax (the tutorial's call) vs the dual form."""
    params = state.params
    # laplax exactly as the tutorial: a fresh predictive, vmapped over the grid, not jitted
    model, _ = tutorial.new_model(0, 1e-3)
    from flax import nnx

    nnx.update(model, nnx.State(jax.tree.map(jnp.asarray, params)))
    loader = tutorial.DataLoader(jnp.asarray(x), jnp.asarray(y), 10)
    ref, t_ref_cold = timed(tutorial.uncertainty, loader, model, prior, jnp.asarray(grid))
    ref, t_ref = timed(tutorial.uncertainty, loader, model, prior, jnp.asarray(grid))
    cap = experiment.posterior_capacity(len(x))  # as experiment.posterior_of pads
    x_pad = np.zeros((cap, 2), np.float32)
    x_pad[: len(x)] = x
    mask = (np.arange(cap) < len(x)).astype(np.float32)

    def ours():
        post = laplace.fit_posterior(params, jnp.asarray(x_pad), jnp.asarray(mask))
        return laplace.predictive_std(post, params, jnp.asarray(grid), prior)

    got, t_cold = timed(ours)
    got, t_warm = timed(ours)
    preds = jnp.asarray(experiment.predict(params, grid))

    def ours_selected():
        post = laplace.fit_posterior(params, jnp.asarray(x_pad), jnp.asarray(mask))
        return jnp.sqrt(laplace.predictive_var_of(post, params, jnp.asarray(grid), preds, jnp.float32(prior)))

    selected, _ = timed(ours_selected)  # compile
    selected, t_sel = timed(ours_selected)
    ref_selected = ref[jnp.arange(len(grid)), preds]  # the tutorial's `uncertainty`
    diff = float(jnp.max(jnp.abs(got - ref)))
    diff_sel = float(jnp.max(jnp.abs(selected - ref_selected)))
    return {
        "n_labelled": len(x),
        "laplax_seconds": t_ref,
        "laplax_first_call_seconds": t_ref_cold,
        "ours_all_classes_seconds": t_warm,
        "ours_first_call_seconds": t_cold,
        "ours_predicted_class_seconds": t_sel,
        "speedup_all_classes": t_ref / t_warm,
        "speedup_predicted_class": t_ref / t_sel,
        "max_abs_std_diff": diff,
        "max_std": float(jnp.max(ref)),
        "relative_diff": diff / float(jnp.max(ref)),
        "relative_diff_predicted_class": diff_sel / float(jnp.max(ref_selected)),
    }


def calibration_comparison(params, x_cal, y_cal, cfg):
    t0 = time.perf_counter()
    tau_laplax = laplax_path.calibrate(
        params,
        x_cal,
        y_cal,
        x_cal,
        y_cal,
        log_prior_prec_min=cfg.log_prior_prec_min,
        log_prior_prec_max=cfg.log_prior_prec_max,
        grid_size=cfg.calibration_grid_size,
    )
    t_laplax = time.perf_counter() - t0
    jax.clear_caches()  # compilation included for ours too
    t0 = time.perf_counter()
    tau, grid, curve = experiment.calibrate_prior_precision(
        params,
        x_cal,
        y_cal,
        curvature="full",
        log_min=cfg.log_prior_prec_min,
        log_max=cfg.log_prior_prec_max,
        size=cfg.calibration_grid_size,
        mc_samples=cfg.mc_samples,
    )
    t_ours = time.perf_counter() - t0
    return {
        "laplax_prior_prec": tau_laplax,
        "ours_prior_prec": tau,
        "laplax_seconds": t_laplax,
        "ours_seconds_including_compile": t_ours,
        "speedup": t_laplax / t_ours,
        "ece_at_ours": float(curve[int(np.argmin(np.abs(np.asarray(grid) - tau)))]),
        "ece_at_laplax": float(curve[int(np.argmin(np.abs(np.asarray(grid) - tau_laplax)))]),
    }


def other_seeds(cfg, seeds):
    rows = []
    for seed in seeds:
        seeded = cfg.model_copy(update={"seed": seed})
        data = sources.draw(seeded)
        state = stages.initial_training(seeded, data).state
        row = calibration_comparison(state.params, data.x_calibration, data.y_calibration, cfg)
        row["seed"] = seed
        row["ece_gap"] = row["ece_at_ours"] - row["ece_at_laplax"]
        rows.append(row)
        print(
            f"  seed {seed}: laplax {row['laplax_prior_prec']:.4f}, ours {row['ours_prior_prec']:.4f}, "
            f"ECE gap {row['ece_gap']:+.4f}",
            flush=True,
        )
    return rows


def tutorial_procedure(cfg, data):
    """The tutorial end to end (initial training, calibration, 50 rounds, passive)."""
    handler = CompileCounter()
    out = {}
    t_all = time.perf_counter()
    grid = jnp.asarray(data.pool)
    model, opt = tutorial.new_model(cfg.seed, cfg.learning_rate)
    loader = tutorial.DataLoader(jnp.asarray(data.x_initial), jnp.asarray(data.y_initial), cfg.batch_size)
    _, out["initial_training"] = timed(tutorial.train_model, model, opt, loader, cfg.initial_epochs)
    cal_loader = tutorial.DataLoader(jnp.asarray(data.x_calibration), jnp.asarray(data.y_calibration), cfg.batch_size)
    prior, out["calibration"] = timed(tutorial.calibrate, cal_loader, model)
    rounds, accs, compiles = [], [], []
    preds = tutorial.grid_predictions(model, grid)
    std = tutorial.uncertainty(loader, model, prior, grid)
    nxt = grid[jnp.argmax(std[jnp.arange(len(grid)), preds])]
    logging.getLogger("jax").addHandler(handler)
    jax.config.update("jax_log_compiles", True)
    for _ in range(cfg.rounds):
        before = handler.count
        t0 = time.perf_counter()
        loader = loader.add(nxt, jnp.atleast_1d(problem.true_label(nxt)))
        tutorial.train_model(model, opt, loader, cfg.epochs_per_round)
        preds = tutorial.grid_predictions(model, grid)
        std = tutorial.uncertainty(loader, model, prior, grid)
        nxt = grid[jnp.argmax(std[jnp.arange(len(grid)), preds])]
        accs.append(float(jnp.mean(preds == jnp.asarray(data.y_test))))
        jax.block_until_ready(nxt)
        rounds.append(time.perf_counter() - t0)
        compiles.append(handler.count - before)
    jax.config.update("jax_log_compiles", False)
    out["rounds_total"] = sum(rounds)
    out["round_median"] = float(np.median(rounds))
    out["compilations_per_round"] = compiles
    xp = problem.uniform_points(problem.split_keys(cfg.seed).passive, cfg.n_passive)
    pmodel, popt = tutorial.new_model(cfg.seed, cfg.learning_rate)
    ploader = tutorial.DataLoader(xp, problem.true_labels(xp), cfg.batch_size)
    _, out["passive"] = timed(tutorial.train_model, pmodel, popt, ploader, cfg.passive_epochs)
    out["total"] = time.perf_counter() - t_all
    out["prior_precision"] = float(prior)
    out["final_active_accuracy"] = accs[-1]
    out["passive_accuracy"] = float(jnp.mean(tutorial.grid_predictions(pmodel, grid) == jnp.asarray(data.y_test)))
    return out


ROUND_PARTS = ("predict", "fit_posterior", "predictive_std", "pick", "label", "retrain", "evaluate")


def project_rounds(cfg, data, state, prior):
    """The project's rounds without Prefect: time per round and per part of a round
    (the profile), and XLA compilations per round."""
    handler = CompileCounter()
    logging.getLogger("jax").addHandler(handler)
    jax.config.update("jax_log_compiles", True)
    x, y = data.x_initial, data.y_initial
    grid = jnp.asarray(data.pool)
    times, compiles, parts = [], [], {name: [] for name in ROUND_PARTS}
    for _ in range(cfg.rounds):
        before = handler.count
        stamps = [time.perf_counter()]
        preds = experiment.predict(state.params, data.pool)
        stamps.append(time.perf_counter())
        post = jax.block_until_ready(experiment.posterior_of(state.params, x))
        stamps.append(time.perf_counter())
        scores = np.sqrt(
            np.asarray(laplace.predictive_var_of(post, state.params, grid, jnp.asarray(preds), jnp.float32(prior)))
        )
        stamps.append(time.perf_counter())
        p = data.pool[acquisition.pick(scores, rule="argmax", key=None, exclude=[])]
        stamps.append(time.perf_counter())
        label = problem.true_labels(p[None])
        stamps.append(time.perf_counter())
        x, y = np.concatenate([x, p[None]]), np.concatenate([y, label])
        state, _ = experiment.retrain(
            state, x, y, learning_rate=cfg.learning_rate, epochs=cfg.epochs_per_round, batch_size=cfg.batch_size
        )
        stamps.append(time.perf_counter())
        experiment.accuracy(experiment.predict(state.params, data.pool), data.y_test)
        stamps.append(time.perf_counter())
        times.append(stamps[-1] - stamps[0])
        for name, t0, t1 in zip(ROUND_PARTS, stamps[:-1], stamps[1:], strict=True):
            parts[name].append(t1 - t0)
        compiles.append(handler.count - before)
    jax.config.update("jax_log_compiles", False)
    logging.getLogger("jax").removeHandler(handler)
    return {
        "round_median": float(np.median(times)),
        "rounds_total": sum(times),
        "profile_median_seconds": {name: float(np.median(v)) for name, v in parts.items()},
        "compilations_per_round": compiles,
        "compilations_after_round_1": sum(compiles[1:]),
    }


def flow_round_profile(flow_run: dict) -> dict:
    """Median wall time of each stage task of a round inside the flow (rounds 2-50)."""
    walls = flow_run["in_flow_seconds"]  # rounds 2-50: round 1 overlaps the passive baseline's start
    out = {}
    for stage in ("acquire", "label", "retrain", "evaluate"):
        values = [v for k, v in walls.items() if k.endswith("/" + stage) and not k.startswith("round-01/")]
        out[stage] = float(np.median(values))
    return out


def _cli(env: dict, artifacts: Path, *extra: str) -> dict:
    """One ``python -m flows.active_learning`` process, as ``make run`` runs it."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "flows.active_learning", "--artifacts-dir", str(artifacts), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    printed = json.loads(proc.stdout[: proc.stdout.rindex("}") + 1])
    doc = json.loads(next(artifacts.glob("al-*/results.json")).read_text())
    rounds = list(doc["run"]["round_seconds"].values())
    return {
        "wall_seconds": wall,
        "flow_call_seconds": printed["flow_call_seconds"],
        "prior_precision": doc["prior_precision"],
        "final_active_accuracy": doc["final_active_accuracy"],
        "passive_accuracy": doc["passive_accuracy"],
        "in_flow_seconds": doc["run"]["wall_seconds"],
        "round_median_seconds": float(np.median(rounds)) if rounds else None,
        "restored_stages": len(doc["run"]["restored"]),
        "computed_stages": len(doc["run"]["computed"]),
        "numbers": {k: doc[k] for k in ("prior_precision", "active_accuracy", "passive_accuracy", "chosen_indices")},
    }


def whole_flow(cfg):
    """The default experiment through Prefect, as `make run` runs it: a fresh process
    with the temporary server (its start included), one process per mode, in order:

    - ``cold``: a fresh PREFECT_HOME (database migrations) and an empty JAX
      compilation cache, as on a first run;
    - ``warm``: the same command with ``--refresh`` (every stage recomputed; the
      database and the compiled programs exist), as on every later run;
    - ``restored``: the same command again: everything is restored from the folder
      (what a resumed or suspended-and-answered run replays);
    - ``empty_home``: the same command with a new, empty PREFECT_HOME (a new
      machine): it must restore everything, from the folder alone.

    Peak RSS is the largest of the flow processes."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "PREFECT_HOME": str(Path(tmp) / "home"),
            "BAL_JAX_CACHE_DIR": str(Path(tmp) / "jax"),
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        }
        env.pop("PREFECT_API_URL", None)
        artifacts = Path(tmp) / "a"
        out["cold"] = _cli(env, artifacts)
        out["warm"] = _cli(env, artifacts, "--refresh")
        out["restored"] = _cli(env, artifacts)
        out["empty_home"] = _cli({**env, "PREFECT_HOME": str(Path(tmp) / "empty-home")}, artifacts)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "artifacts" / "benchmark.json"))
    parser.add_argument("--seeds", type=int, default=5, help="other seeds for the calibration agreement check")
    parser.add_argument("--skip-tutorial-loop", action="store_true", help="skip the 5-minute tutorial procedure")
    parser.add_argument("--targets-only", action="store_true", help="recompute the targets of an existing JSON (--out)")
    args = parser.parse_args(argv)
    if args.targets_only:
        result = json.loads(Path(args.out).read_text())
        result["targets"] = targets(result)
        write_json(result, args.out)
        print_table(result)
        return
    cfg = ExperimentConfig()
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "jax": jax.__version__,
        }
    }
    print("flow: the whole default experiment through Prefect ...", flush=True)
    result["project_flow"] = whole_flow(cfg)
    data = sources.draw(cfg)
    state = stages.initial_training(cfg, data).state
    print("calibration: laplax vs ours ...", flush=True)
    result["calibration"] = calibration_comparison(state.params, data.x_calibration, data.y_calibration, cfg)
    prior = result["calibration"]["ours_prior_prec"]
    print("uncertainty maps at n = 20 and n = 70 ...", flush=True)
    result["uncertainty_n20"] = std_map_comparison(state, data.x_initial, data.y_initial, data.pool, prior)
    s70, x70, y70 = labelled_set(cfg, data, state, prior, 50)
    result["uncertainty_n70"] = std_map_comparison(s70, x70, y70, data.pool, prior)
    print("rounds on the project's path ...", flush=True)
    result["project_rounds"] = project_rounds(cfg, data, state, prior)
    result["flow_round_median_seconds"] = flow_round_profile(result["project_flow"]["warm"])
    if not args.skip_tutorial_loop:
        print("the tutorial's procedure end to end (about 5 minutes) ...", flush=True)
        result["tutorial"] = tutorial_procedure(cfg, data)
        result["whole_experiment_ratio"] = {
            mode: result["project_flow"][mode]["wall_seconds"] / result["tutorial"]["total"]
            for mode in ("cold", "warm")
        }
        result["round_speedup"] = result["tutorial"]["round_median"] / result["project_rounds"]["round_median"]
    if args.seeds:
        print(f"calibration on {args.seeds} other seeds ...", flush=True)
        result["calibration_other_seeds"] = other_seeds(cfg, range(1, args.seeds + 1))
    result["targets"] = targets(result)
    write_json(result, args.out)
    print_table(result)
    print(f"\nJSON: {args.out}")


def targets(r: dict) -> dict:
    """The fast-rounds issue's targets: {name: {"value", "target", "met"}}."""
    n20, n70, cal = r["uncertainty_n20"], r["uncertainty_n70"], r["calibration"]
    cold = r["project_flow"]["cold"]
    out = {
        "uncertainty map n=70 speed-up (the tutorial's `uncertainty`: predicted class)": (
            n70["speedup_predicted_class"],
            ">= 20",
            n70["speedup_predicted_class"] >= 20,
        ),
        "max |std diff| / max std (maps and all classes, n=20 and n=70)": (
            max(d[k] for d in (n20, n70) for k in ("relative_diff", "relative_diff_predicted_class")),
            "<= 1e-4",
            all(d[k] <= 1e-4 for d in (n20, n70) for k in ("relative_diff", "relative_diff_predicted_class")),
        ),
        "calibration speed-up, compilation included": (cal["speedup"], ">= 20", cal["speedup"] >= 20),
        "calibrated prior precision = laplax's (default problem)": (
            cal["ours_prior_prec"],
            f"{cal['laplax_prior_prec']:.7f}",
            abs(cal["ours_prior_prec"] / cal["laplax_prior_prec"] - 1) < 1e-6,
        ),
        "compilations after round 1": (
            r["project_rounds"]["compilations_after_round_1"],
            "0",
            r["project_rounds"]["compilations_after_round_1"] == 0,
        ),
        "flow peak RSS [MB]": (r["project_flow"]["peak_rss_mb"], "<= 1536", r["project_flow"]["peak_rss_mb"] <= 1536),
        "default run faithful (prior 0.4132, active >= 96 %, passive 89-94 %)": (
            [cold["prior_precision"], cold["final_active_accuracy"], cold["passive_accuracy"]],
            "0.4132, >= 0.96, 0.89-0.94",
            round(cold["prior_precision"], 4) == 0.4132
            and cold["final_active_accuracy"] >= 0.96
            and 0.89 <= cold["passive_accuracy"] <= 0.94,
        ),
    }
    if "calibration_other_seeds" in r:
        gap = max(abs(row["ece_gap"]) for row in r["calibration_other_seeds"])
        out["other seeds: |ECE(ours) - ECE(laplax's choice)|, by laplax's objective"] = (gap, "<= 0.01", gap <= 0.01)
    flow = r["project_flow"]
    warm, restored, empty = flow["warm"], flow["restored"], flow["empty_home"]
    ratio = restored["flow_call_seconds"] / warm["flow_call_seconds"]
    out["restored re-run: flow time / fresh flow time"] = (ratio, "<= 0.10", ratio <= 0.10)
    ratio = restored["wall_seconds"] / warm["wall_seconds"]
    out["restored re-run: whole process / fresh whole process"] = (ratio, "<= 0.5", ratio <= 0.5)
    out["replay of a finished 50-round experiment: flow time [s]"] = (
        restored["flow_call_seconds"],
        "<= 2",
        restored["flow_call_seconds"] <= 2,
    )
    ratio = warm["round_median_seconds"] / r["project_rounds"]["round_median"]
    out["flow's median round / the round's computation alone"] = (ratio, "<= 1.3", ratio <= 1.3)
    same = empty["numbers"] == warm["numbers"] == restored["numbers"]
    out["empty PREFECT_HOME: stages recomputed, results identical"] = (
        empty["computed_stages"],
        "0, identical",
        empty["computed_stages"] == 0 and empty["restored_stages"] >= 53 and same,
    )
    if "whole_experiment_ratio" in r:
        for mode, limit in (("cold", 0.15), ("warm", 0.06)):
            ratio = r["whole_experiment_ratio"][mode]
            out[f"whole experiment / tutorial ({mode})"] = (ratio, f"<= {limit}", ratio <= limit)
    return {name: {"value": v, "target": t, "met": bool(m)} for name, (v, t, m) in out.items()}


def print_table(r):
    n20, n70 = r["uncertainty_n20"], r["uncertainty_n70"]
    rows = [
        ("uncertainty map n=20 (predicted class)", n20["laplax_seconds"], n20["ours_predicted_class_seconds"]),
        ("uncertainty map n=70 (predicted class)", n70["laplax_seconds"], n70["ours_predicted_class_seconds"]),
        ("std of all classes n=20", n20["laplax_seconds"], n20["ours_all_classes_seconds"]),
        ("std of all classes n=70", n70["laplax_seconds"], n70["ours_all_classes_seconds"]),
        (
            "calibration (compile included)",
            r["calibration"]["laplax_seconds"],
            r["calibration"]["ours_seconds_including_compile"],
        ),
    ]
    if "tutorial" in r:
        rows += [
            ("one round (median)", r["tutorial"]["round_median"], r["project_rounds"]["round_median"]),
            (
                "whole default experiment, first run (cold)",
                r["tutorial"]["total"],
                r["project_flow"]["cold"]["wall_seconds"],
            ),
            (
                "whole default experiment, later runs (warm)",
                r["tutorial"]["total"],
                r["project_flow"]["warm"]["wall_seconds"],
            ),
        ]
    print(f"\n{'':44s}{'tutorial [s]':>13s}{'project [s]':>13s}{'speed-up':>10s}")
    for name, a, b in rows:
        print(f"{name:44s}{a:13.3f}{b:13.3f}{a / b:9.1f}x")
    print(
        "\nmax |std diff| / max std vs laplax: "
        f"n=20 {n20['relative_diff_predicted_class']:.1e} (map), {n20['relative_diff']:.1e} (all classes); "
        f"n=70 {n70['relative_diff_predicted_class']:.1e} (map), {n70['relative_diff']:.1e} (all classes)"
    )
    cal = r["calibration"]
    print(f"prior precision: laplax {cal['laplax_prior_prec']:.7f}, ours {cal['ours_prior_prec']:.7f}")
    for row in r.get("calibration_other_seeds", []):
        print(
            f"  seed {row['seed']}: laplax {row['laplax_prior_prec']:.4f}, ours {row['ours_prior_prec']:.4f}, "
            f"ECE gap {row['ece_gap']:+.4f}, speed-up {row['speedup']:.1f}x"
        )
    print(f"compilations after round 1 (project): {r['project_rounds']['compilations_after_round_1']}")
    profile = r["project_rounds"]["profile_median_seconds"]
    print("one round without Prefect (median ms): " + ", ".join(f"{k} {1000 * v:.1f}" for k, v in profile.items()))
    if "flow_round_median_seconds" in r:
        flow = r["flow_round_median_seconds"]
        print(
            "one round in the flow, per task (median ms): " + ", ".join(f"{k} {1000 * v:.1f}" for k, v in flow.items())
        )
    if "whole_experiment_ratio" in r:
        ratio = r["whole_experiment_ratio"]
        print(f"whole experiment / tutorial: cold {ratio['cold']:.3f}, warm {ratio['warm']:.3f}")
    print("\ntargets:")
    for name, t in r["targets"].items():
        value = t["value"]
        shown = ", ".join(f"{v:.4g}" for v in value) if isinstance(value, list) else f"{value:.4g}"
        print(f"  [{'met' if t['met'] else 'NOT MET':7s}] {name}: {shown} (target {t['target']})")
    cold = r["project_flow"]["cold"]
    print(
        f"flow peak RSS: {r['project_flow']['peak_rss_mb']:.0f} MB; default run: prior {cold['prior_precision']:.4f}, "
        f"active {100 * cold['final_active_accuracy']:.2f} %, passive {100 * cold['passive_accuracy']:.2f} %"
    )


if __name__ == "__main__":
    main()
