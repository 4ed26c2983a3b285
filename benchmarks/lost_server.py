"""What a run does when its Prefect server goes away: time to recover, time to fail.

    python -m benchmarks.lost_server [--outage 15] [--out artifacts/lost_server.json]

Starts a real ``prefect server start`` on a free port (its own PREFECT_HOME, SQLite;
``runtime.local_server.PrefectServer``, restartable on the same port), runs the CLI against it in a subprocess, and kills the server's process group once
some rounds are saved:

- ``restart``: the server is started again on the same port ``--outage`` seconds
  after the kill. Measured: the CLI's exit code and wall time against an uninterrupted
  run of the same configuration, and whether its numbers are identical.
- ``lost``: the server stays down. Measured: seconds from the kill to the CLI's exit,
  its exit code and the last line on stderr; then the server is started again and the
  same command re-run: whether it resumes (finished rounds cached) and matches.

Prints the figures as JSON and writes them to ``--out``.
"""

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from benchmarks import comparable, write_json

ROOT = Path(__file__).resolve().parent.parent

# The scenarios and their driver are the tests' (tests/test_resilience.py runs them).
from tests.outage import CONFIG, clean_run, lost_scenario, restart_scenario, rounds_cached  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--outage", type=float, default=15.0, help="seconds the server is down in the restart scenario")
    p.add_argument("--kill-after-round", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "artifacts" / "lost_server.json"))
    p.add_argument("--keep", action="store_true", help="keep the work folder (server logs, stderr)")
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="lost-server-"))
    try:
        clean = clean_run(workdir, CONFIG)
        restart = restart_scenario(workdir, CONFIG, outage=args.outage, kill_after_round=args.kill_after_round)
        lost = lost_scenario(workdir, CONFIG, kill_after_round=args.kill_after_round)
        expected = comparable(clean["results"])
        out = {
            "config": CONFIG,
            "clean_run_seconds": clean["seconds"],
            "restart": {
                **{k: v for k, v in restart.items() if k not in ("stderr", "stdout", "results")},
                "identical_to_clean_run": restart["results"] is not None and comparable(restart["results"]) == expected,
                "extra_seconds_over_clean_run": restart["seconds"] - clean["seconds"],
            },
            "lost": {
                **{k: v for k, v in lost.items() if k not in ("stderr", "resume_stderr", "results")},
                "resumed_identical_to_clean_run": lost["results"] is not None
                and comparable(lost["results"]) == expected,
                "resumed_rounds_cached": None if lost["results"] is None else rounds_cached(lost["results"]),
            },
        }
        if args.keep:
            (workdir / "restart.stderr").write_text(restart["stderr"])
            (workdir / "lost.stderr").write_text(lost["stderr"])
            out["workdir"] = str(workdir)
        write_json(out, args.out)
        print(json.dumps(out, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
