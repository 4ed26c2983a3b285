"""Resume benchmark: a run whose stages are all cached vs a fresh run of the same
configuration, in one invocation; the one-time temporary server start on its own.

    python -m benchmarks.resume [--rounds 50] [--out artifacts/resume.json]
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from prefect import flow

from alcore.config import ExperimentConfig
from benchmarks import write_json
from flows.active_learning import active_learning

ROOT = Path(__file__).resolve().parent.parent


@flow(name="server-start-probe")
def _noop() -> None:
    """The first flow of a process starts the temporary server: timed on its own."""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--out", default=str(ROOT / "artifacts" / "resume.json"))
    args = p.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = ExperimentConfig(rounds=args.rounds, artifacts_dir=tmp)
        t0 = time.perf_counter()
        _noop()
        out["server_start_and_first_flow_seconds"] = time.perf_counter() - t0
        for mode, refresh in (("fresh", True), ("resumed", False)):
            t0 = time.perf_counter()
            active_learning(config, refresh=refresh)
            out[f"{mode}_seconds"] = time.perf_counter() - t0
            doc = json.loads(next(Path(tmp).glob("al-*/results.json")).read_text())
            out[f"{mode}_restored_stages"] = len(doc["run"]["restored"])
            out[f"{mode}_computed_stages"] = len(doc["run"]["computed"])
        folder = next(Path(tmp).glob("al-*"))
        out["round_file_bytes"] = (folder / "rounds" / "round-001.joblib").stat().st_size
        out["experiment_folder_bytes"] = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    out["resumed_over_fresh"] = out["resumed_seconds"] / out["fresh_seconds"]
    write_json(out, args.out)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
