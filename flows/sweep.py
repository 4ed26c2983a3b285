"""A sweep of experiments (strategy x seed [x curvature]) on Dask, with learning curves.

    python -m flows.sweep [--seeds 10] [--strategies max_std,sampled,entropy,bald,max_std:k5,random]
        [--label-budget 50] [--workers 2 | --dask-address tcp://host:8786] [--set grid_size=50 ...]

Each experiment is one task on Prefect's ``DaskTaskRunner`` (a temporary local cluster
of single-threaded worker processes by default, or an existing cluster by address);
inside it the ``active-learning`` flow runs as a subflow, so every experiment keeps
its per-stage caching and resumes as a single run does. The experiments' folders and
the sweep's outputs are under the artifacts directory, which every worker must reach.
"""

import os

# This machine has no internet: the server's telemetry would only log errors.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import argparse  # noqa: E402
import json
import socket
import sys
import time
import typing
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.settings import PREFECT_API_URL
from prefect.states import State
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from alcore import numerics, strategies
from alcore.config import POOL_DEFAULTS, Curvature, ExperimentConfig, digest
from flows.active_learning import active_learning, experiment
from runtime import local_server
from store.layout import check_writable
from tasks.sweep_report import sweep_key, sweep_report

# EPIG is retired from the registry (alcore/strategies.py says why, measured).
DEFAULT_STRATEGIES = ("max_std", "sampled", "entropy", "bald", "margin", "random")
REFERENCE = "random"  # random-in-the-loop: what every strategy is compared with
# The honest protocol: every label counts (the passive baseline and random-in-the-loop
# get the active side's total), the prior precision needs no held-out labels and
# follows the growing labelled set, and no point is labelled twice.
# On every data set it also trains and starts as measured best against the peers
# (alcore.config.POOL_DEFAULTS; the tutorial standardised like the pools).
HONEST = {**POOL_DEFAULTS, "standardise": True, "count_all_labels": True}
_KEPT = (
    "prior_precision",
    "active_accuracy",
    "initial_accuracy",
    "passive_accuracy",
    "labels_per_round",
    "labels_used_per_round",
    "prediction_change_per_round",
    "labels",
    "chosen_points",
    "chosen_indices",
    "config",
    "config_hash",
    "compute_seconds",
)


def parse_strategy(spec: str) -> tuple[str, int]:
    """``"bald"`` -> ("bald", 1); ``"max_std:k5"`` -> ("max_std", 5)."""
    name, _, batch = spec.partition(":")
    if name not in strategies.REGISTRY:
        raise ValueError(f"unknown strategy {name!r} in {spec!r}; expected one of {', '.join(strategies.names())}")
    if not batch:
        return name, 1
    if not (batch.startswith("k") and batch[1:].isdigit() and int(batch[1:]) >= 1):
        raise ValueError(f"strategy {spec!r}: the batch suffix is ':k<N>' with N >= 1, e.g. 'max_std:k5'")
    return name, int(batch[1:])


class SweepConfig(BaseModel):
    """A grid of experiments."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    strategies: list[str] = Field(
        list(DEFAULT_STRATEGIES), min_length=1, description="Acquisition strategies; ':kN' labels N points per round."
    )
    seeds: list[int] = Field(
        list(range(10)), min_length=1, description="Seeds: each one a data draw and a model initialisation."
    )
    label_budget: int = Field(50, ge=1, le=10_000, description="Labels acquired per experiment: rounds = budget / k.")
    protocol: typing.Literal["honest", "tutorial"] = Field(
        "honest",
        description="honest: every label counts for the passive baseline, prior precision by marginal likelihood every 10 rounds, no re-picks; tutorial: the tutorial's settings. `experiment` overrides either.",
    )
    reference_budget: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Labels random-in-the-loop acquires (default: 3 x label_budget), so that how many labels it needs to reach an accuracy is measured even where the strategies need fewer; every comparison is at the same total labels.",
    )
    curvatures: list[Curvature] = Field(["full"], min_length=1, description="Laplace curvature types.")
    experiment: dict[str, typing.Any] = Field(
        default_factory=dict, description="Other ExperimentConfig fields for every experiment, e.g. {'grid_size': 50}."
    )
    artifacts_dir: str = Field(
        "artifacts",
        min_length=1,
        description="Where the experiments and the sweep's outputs go (reachable by every worker).",
    )
    workers: int = Field(
        max(1, os.cpu_count() or 1), ge=1, le=512, description="Local cluster: worker processes (one thread each)."
    )
    dask_address: str | None = Field(
        None, description="An existing Dask scheduler, e.g. tcp://host:8786 (then workers is ignored)."
    )
    graph: bool = Field(
        False,
        description="Run each experiment as the active-learning flow (a subflow, a task run per stage: every stage a node in the UI) instead of plain calls inside its one task; the same numbers, slower, for a small sweep one watches.",
    )

    @field_validator("strategies")
    @classmethod
    def _strategies(cls, value):
        for spec in value:
            parse_strategy(spec)
        if len(set(value)) != len(value):
            raise ValueError("strategies must not repeat")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value):
        if len(set(value)) != len(value) or min(value) < 0:
            raise ValueError("seeds must be distinct and non-negative")
        return value

    @model_validator(mode="after")
    def _budget_and_overrides(self):
        for spec in self.strategies:
            _, k = parse_strategy(spec)
            if self.budget(spec) % k:
                raise ValueError(f"label_budget {self.budget(spec)} is not a multiple of k={k} ({spec!r})")
        if self.reference_budget is not None and self.reference_budget < self.label_budget:
            raise ValueError("reference_budget must be at least label_budget (comparisons are at the same labels)")
        bad = set(self.experiment) & {
            "seed",
            "acquisition",
            "acquisition_batch",
            "rounds",
            "curvature",
            "artifacts_dir",
            "oracle",
        }
        if bad:
            raise ValueError(f"experiment overrides may not set {sorted(bad)}: the sweep sets them")
        self.experiments()  # every experiment's configuration must validate
        return self

    def budget(self, spec: str) -> int:
        """Labels a strategy acquires: random-in-the-loop runs longer (see reference_budget)."""
        if parse_strategy(spec)[0] == REFERENCE:
            return self.reference_budget or 3 * self.label_budget
        return self.label_budget

    def experiments(self) -> list[ExperimentConfig]:
        protocol = HONEST if self.protocol == "honest" else {}
        # the reference's own passive baseline would get its longer budget: it is
        # compared with the others' (the same seed and label total) instead
        shared_passive = any(k == 1 and name != REFERENCE for name, k in map(parse_strategy, self.strategies))
        out = []
        for curvature in self.curvatures:
            for spec in self.strategies:
                name, k = parse_strategy(spec)
                longer = name == REFERENCE and self.budget(spec) != self.label_budget
                # the honest protocol recalibrates every 10 labels, whatever the batch size
                per_labels = {"recalibrate_every": max(1, protocol["recalibrate_every"] // k)} if protocol else {}
                for seed in self.seeds:
                    out.append(
                        ExperimentConfig(
                            **{
                                **protocol,
                                **per_labels,
                                **self.experiment,
                                **({"passive": False} if longer and shared_passive else {}),
                                "seed": seed,
                                "acquisition": name,
                                "acquisition_batch": k,
                                "rounds": self.budget(spec) // k,
                                "curvature": curvature,
                                "plots": False,
                                "artifacts_dir": str(Path(self.artifacts_dir) / "experiments"),
                            }
                        )
                    )
        return out

    def label(self, config: ExperimentConfig) -> str:
        """The strategy's name in tables and plots."""
        name = config.acquisition + (f":k{config.acquisition_batch}" if config.acquisition_batch > 1 else "")
        return name if len(self.curvatures) == 1 else f"{name}/{config.curvature}"

    def sweep_hash(self) -> str:
        return digest(self.model_dump(exclude={"workers", "dask_address", "artifacts_dir", "graph"}))


@task(
    name="experiment",
    task_run_name="experiment/{config.acquisition}-k{config.acquisition_batch}-seed{config.seed}",
    cache_policy=NO_CACHE,
    retries=1,
)
def run_experiment(
    config: ExperimentConfig, refresh: bool = False, accept_platform_mix: bool = False, graph: bool = False
) -> dict:
    """One experiment, in whichever worker the task runner chose, reduced to the
    numbers the sweep aggregates. Its stages are those of a single run, stored and
    resumable the same way, but computed as plain calls inside this one task: no
    subflow and no four task runs a round, which for sixty experiments only loaded
    the server (``graph=True``: the active-learning flow as a subflow instead, every
    stage a node in the UI)."""
    started = time.time()
    _check_reachable(config.artifacts_dir)
    t0 = time.perf_counter()
    if graph:
        summary = active_learning(config, refresh=refresh, accept_platform_mix=accept_platform_mix)
    else:
        summary = experiment(config, refresh, accept_platform_mix, graph=False)
    if isinstance(summary, State):  # a stage refused (a full disk, another platform): fail with its message
        raise RuntimeError(f"{summary.name}: {summary.message}")
    doc = json.loads((Path(summary["folder"]) / "results.json").read_text())
    kept = {k: doc[k] for k in _KEPT}
    kept["wall_seconds"] = time.perf_counter() - t0
    kept["flow_seconds"] = summary["flow_seconds"]  # inside the experiment (its flow run, with graph)
    kept["started_at"], kept["finished_at"] = started, time.time()
    kept["worker_pid"] = os.getpid()
    return kept


def _check_reachable(artifacts_dir: str) -> None:
    """Fail the experiment at once, naming the path and the worker, if this worker
    cannot write the sweep's artifacts directory (every worker must reach it: the
    experiments' folders and the shared passive baselines are there)."""
    try:
        check_writable(artifacts_dir)
    except ValueError as e:
        raise RuntimeError(
            f"worker {socket.gethostname()} (pid {os.getpid()}) cannot use the sweep's artifacts directory: {e}. "
            "Every Dask worker must reach it at the same path (a shared filesystem), "
            "or pass --artifacts-dir with a path they all share."
        ) from None


class _SweepProgress:
    """Experiments done out of the total, with an estimate of the time left, in the
    log and as a progress artifact on the sweep's run."""

    def __init__(self, total: int, key: str):
        self.total, self.done, self.t0 = total, 0, time.perf_counter()
        self.id = create_progress_artifact(0.0, key=key, description=f"Sweep: experiments done of {total}")

    def step(self) -> str:
        self.done += 1
        elapsed = time.perf_counter() - self.t0
        left = elapsed / self.done * (self.total - self.done)
        update_progress_artifact(self.id, progress=100.0 * self.done / self.total)
        return f"{self.done}/{self.total} done, {elapsed:.0f} s so far, about {left:.0f} s left"


@flow(name="active-learning-sweep", log_prints=True)
def sweep(
    config: SweepConfig = SweepConfig(),  # noqa: B008 - frozen model
    refresh: bool = False,
    accept_platform_mix: bool = False,
) -> dict:
    """Run every experiment of the grid on the task runner and aggregate them."""
    log = get_run_logger()
    t0, started_at = time.perf_counter(), time.time()
    experiments = config.experiments()
    log.info(
        "sweep: %d experiments (%d strategies x %d seeds x %d curvatures)",
        len(experiments),
        len(config.strategies),
        len(config.seeds),
        len(config.curvatures),
    )
    progress = _SweepProgress(len(experiments), key=f"{sweep_key(config)}-progress")
    # the longest first (random-in-the-loop's 3x budget), so no worker is left with one at the end
    futures = {
        run_experiment.submit(c, refresh=refresh, accept_platform_mix=accept_platform_mix, graph=config.graph): c
        for c in sorted(experiments, key=lambda c: -c.rounds)
    }
    done = {}
    for fut in as_completed(list(futures)):
        c, r = futures[fut], fut.result()
        done[id(c)] = (config.label(c), c.seed, r)
        log.info(
            "%s seed %d: final %.2f %% at %d labels, passive %s (%.1f s, pid %d); %s",
            config.label(c),
            c.seed,
            100 * r["active_accuracy"][-1],
            r["labels"]["active_total"],
            "n/a" if r["passive_accuracy"] is None else f"{100 * r['passive_accuracy']:.2f} %",
            r["wall_seconds"],
            r["worker_pid"],
            progress.step(),
        )
    results = [done[id(c)] for c in experiments]
    wall = time.perf_counter() - t0
    return sweep_report(config, results, wall, started_at)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m flows.sweep", description="Run a sweep of active-learning experiments on Dask."
    )
    p.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES), help="comma-separated; ':kN' for batches of N")
    p.add_argument("--seeds", type=int, default=10, help="number of seeds (0, 1, ..., N-1)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--label-budget", type=int, default=50)
    p.add_argument("--protocol", choices=("honest", "tutorial"), default="honest", help="see SweepConfig.protocol")
    p.add_argument("--reference-budget", type=int, default=None, help="labels random-in-the-loop acquires (3 x budget)")
    p.add_argument("--curvatures", default="full", help="comma-separated: full, diagonal, lanczos, lobpcg")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="an ExperimentConfig field for every experiment (JSON value), e.g. --set grid_size=50",
    )
    p.add_argument("--artifacts-dir", default="artifacts")
    p.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1), help="local cluster worker processes")
    p.add_argument("--dask-address", default=None, help="use an existing Dask scheduler instead")
    p.add_argument("--sequential", action="store_true", help="one experiment after another in this process (no Dask)")
    p.add_argument("--refresh", action="store_true", help="recompute every stage of every experiment")
    p.add_argument(
        "--accept-platform-mix", action="store_true", help="resume stages computed on another numeric platform"
    )
    p.add_argument("--graph", action="store_true", help="each experiment as a subflow, every stage a node in the UI")
    return p


def parse_args(argv=None) -> tuple[SweepConfig, argparse.Namespace]:
    parser = _parser()
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        field, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected FIELD=VALUE")
        try:
            overrides[field] = json.loads(value)
        except json.JSONDecodeError:
            overrides[field] = value
    try:
        config = SweepConfig(
            strategies=[s for s in args.strategies.split(",") if s],
            seeds=list(range(args.first_seed, args.first_seed + args.seeds)),
            label_budget=args.label_budget,
            protocol=args.protocol,
            reference_budget=args.reference_budget,
            curvatures=[c for c in args.curvatures.split(",") if c],
            experiment=overrides,
            artifacts_dir=args.artifacts_dir,
            workers=args.workers,
            dask_address=args.dask_address,
            graph=args.graph,
        )
        check_writable(config.artifacts_dir)
    except ValidationError as e:
        parser.error("; ".join(f"{'.'.join(map(str, err['loc'])) or 'sweep'}: {err['msg']}" for err in e.errors()))
    except ValueError as e:
        parser.error(str(e))
    return config, args


def task_runner_for(config: SweepConfig, *, sequential: bool = False, api_url: str | None = None):
    """Dask for the experiments: an existing cluster, or a temporary local one whose
    workers get the sweep's Prefect API (``api_url``) in their environment."""
    if sequential:
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner

    if config.dask_address:
        return DaskTaskRunner(address=config.dask_address)
    # One worker process per core, each single-threaded: the numeric settings
    # (alcore/numerics.py: one XLA and one OpenBLAS thread, fixed kernels) go into the
    # workers' environment, so they apply before a worker loads NumPy, and every worker
    # computes what a single run computes.
    keep_malloc_defaults()
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": config.workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
            "env": {**numerics.settings(), "OMP_NUM_THREADS": "1", **_prefect_env(api_url)},
        },
    )


def keep_malloc_defaults() -> None:
    """Let the local cluster's workers keep glibc's own memory allocator settings.

    Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_=65536`` in every worker's environment
    (``distributed.nanny.pre-spawn-environ``), to hand freed memory back to the system
    at once. Setting it also switches off glibc's adaptive mmap threshold, so each of a
    round's large arrays is mapped and unmapped afresh and its pages faulted in again:
    a round of ``entropy``, ``bald`` or ``margin`` took 0.30 s in a worker against
    0.15 s in a plain process, most of it system time. The value ``None`` is Dask's
    documented way to unset a variable there; it applies to workers started after it.
    """
    import dask

    dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})


def _prefect_env(api_url: str | None) -> dict:
    """The environment that points a worker process at the sweep's Prefect API."""
    env = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    if os.environ.get("PREFECT_API_AUTH_STRING"):
        env["PREFECT_API_AUTH_STRING"] = os.environ["PREFECT_API_AUTH_STRING"]
    return env


def main(argv=None) -> int:
    config, args = parse_args(argv)
    # One Prefect API for the whole sweep: the user's server, or one temporary server
    # started here. Its URL is in the settings every task carries to the Dask workers
    # (and in the local workers' environment), so no worker starts a server of its own
    # and every experiment's run is on the sweep's server, as its subflow.
    local_server.start_early()
    with local_server.connected():
        api = PREFECT_API_URL.value()
        runner = task_runner_for(config, sequential=args.sequential, api_url=api)
        result = sweep.with_options(task_runner=runner)(
            config, refresh=args.refresh, accept_platform_mix=args.accept_platform_mix
        )
    print(json.dumps({k: result[k] for k in ("folder", "wall_seconds", "table", "stopping_lines")}, indent=2))
    print(f"sweep folder: {result['folder']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
