"""A full disk, or a folder that turns read-only, in the middle of a run (a real tmpfs).

The run ends with one clear line naming the file and what to do; nothing
half-written is left; once there is room again the same command resumes and ends
with the numbers of an uninterrupted run.
"""

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from store import files
from tests.helpers import ROOT, TINY, cli_args, comparable, folder_of, results, run_flow

pytestmark = [pytest.mark.slow, pytest.mark.server]


@pytest.fixture
def small_fs(tmp_path):
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount: Path) -> Path:
    """Take every free byte of the filesystem."""
    ballast = mount / "ballast"
    subprocess.run(["dd", "if=/dev/zero", f"of={ballast}", "bs=64k"], capture_output=True)
    return ballast


def _latest_run(api: str) -> dict:
    """The session server's latest run of the active-learning flow."""
    runs = httpx.post(
        f"{api}/flow_runs/filter",
        json={"flows": {"name": {"any_": ["active-learning"]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 1},
    ).json()
    return runs[0]


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_full_or_read_only_folder_mid_run_ends_clearly_and_resumes(prefect_server, small_fs, tmp_path, fault):
    env = prefect_server["env"]
    config = {**TINY, "seed": 808, "rounds": 6, "epochs_per_round": 300, "artifacts_dir": str(small_fs / "a")}
    # with retries: a retry would fail on the same disk (Prefect 3.9 retries a flow that returns Failed)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.active_learning", *cli_args(config), "--retries", "1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 300
    while not list(small_fs.glob("a/al-*/rounds/round-002.joblib")) and time.time() < deadline:
        time.sleep(0.01)
    if fault == "full":
        ballast = _fill(small_fs)
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    out, err = proc.communicate(timeout=300)
    last = err.strip().splitlines()[-1]
    assert proc.returncode == 1, out[-2000:] + err[-2000:]
    assert last.startswith("CannotWrite: cannot write ") and str(small_fs / "a") in last, last
    reason = "No space left on device" if fault == "full" else "Read-only file system"
    assert reason in last and "then run the same command again" in last, last
    assert "Traceback" not in err.split("CannotWrite")[0][-300:]  # the end is the message, not a traceback
    flow_run = _latest_run(prefect_server["api_url"])
    assert flow_run["run_count"] == 1, "the run was retried"
    assert (flow_run["state"]["type"], flow_run["state"]["name"]) == ("FAILED", "CannotWrite")
    folder = next(small_fs.glob("a/al-*"))
    assert not list(folder.rglob("*.tmp")), "a half-written file was left"
    for round_file in (folder / "rounds").glob("round-*.joblib"):
        assert files.verify(round_file) is None
    finished = len(list((folder / "rounds").glob("round-*.joblib")))
    assert 2 <= finished < 6

    if fault == "full":
        ballast.unlink()
    else:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    resumed = results(folder_of(run_flow(env, config)))
    assert [f"round-{r:02d}" in resumed["run"]["restored"] for r in range(1, 7)] == [r <= finished for r in range(1, 7)]
    fresh = results(folder_of(run_flow(env, {**config, "artifacts_dir": str(tmp_path / "fresh")})))
    assert comparable(resumed) == comparable(fresh)
