"""Benchmarks (not tests): they print figures and write JSON.

Tests import nothing from here; the helpers benchmarks share with the tests are the
tests' own (``tests/helpers.py``), imported below."""

import alcore  # noqa: F401, I001 - first: the numeric settings before NumPy and JAX load (alcore/numerics.py)
import json
import statistics
import threading
import time
from pathlib import Path

import httpx

from tests.helpers import (  # noqa: F401 - the benchmarks import them from here
    PREFECT,
    ROOT,
    cli_args,
    comparable,
    free_port,
    results,
    start_worker,
    stop_worker,
)


def write_json(document: dict, path: str | Path) -> None:
    """Write a benchmark's figures to ``path`` (folders created)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(document, indent=2) + "\n")


SLOW_SECONDS = 5.0


class Prober:
    """Calls the server's API twice a second from a thread, timing each call."""

    def __init__(self, api_url: str):
        self.api_url = api_url
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.wait(0.5):
                for call in (
                    lambda: client.get(f"{self.api_url}/health"),
                    lambda: client.post(f"{self.api_url}/flow_runs/filter", json={"limit": 1}),
                ):
                    t0 = time.perf_counter()
                    try:
                        call().raise_for_status()
                    except httpx.HTTPError:
                        self.failures += 1
                    self.latencies.append(time.perf_counter() - t0)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join()

    def summary(self) -> dict:
        return {
            "calls": len(self.latencies),
            "failed": self.failures,
            "slowest_seconds": max(self.latencies, default=None),
            "median_seconds": statistics.median(self.latencies) if self.latencies else None,
            f"over_{SLOW_SECONDS:g}_s": sum(t > SLOW_SECONDS for t in self.latencies),
        }


def task_runs_of(api_url: str, flow_run_id: str) -> list[dict]:
    """Every task run the server recorded for a flow run (the API pages by 200)."""
    out: list[dict] = []
    while True:
        page = httpx.post(
            f"{api_url}/task_runs/filter",
            json={"task_runs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200, "offset": len(out)},
            timeout=60,
        )
        page.raise_for_status()
        out += page.json()
        if len(page.json()) < 200:
            return out
