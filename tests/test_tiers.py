"""The test tiers' own rules: the fast tier starts no process, never sleeps and uses no
Prefect server (``tests/tiers.py``); tests import no benchmark module; a warning from
the project's code is an error (pyproject.toml's ``filterwarnings``)."""

import ast
import warnings

import pytest

from tests.helpers import ROOT

CHEATS = """
import os
import subprocess
import sys
import threading
import time

import pytest


def test_sleeps():
    time.sleep(0.001)


def test_runs_a_command():
    subprocess.run([sys.executable, "-c", "pass"])


def test_calls_os_system():
    os.system("true")


def test_swallows_the_refusal():
    try:
        time.sleep(0.001)
    except Exception:
        pass


def test_sleeps_in_a_thread_it_started():
    thread = threading.Thread(target=time.sleep, args=(0.001,))
    thread.start()
    thread.join()


def test_asks_for_the_server(prefect_server):
    pass


@pytest.mark.server
def test_marked_server():
    pass


def test_plain():
    assert sum(range(4)) == 6


@pytest.mark.slow
def test_slow_is_not_watched(prefect_server):
    assert prefect_server == "a server"
"""


def test_fast_tests_that_sleep_start_processes_or_use_the_server_fail(pytester):
    pytester.makeconftest(
        """
        import pytest

        pytest_plugins = ("tests.tiers",)


        @pytest.fixture
        def prefect_server():
            return "a server"
        """
    )
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\n    server: server\n")
    pytester.makepyfile(test_cheats=CHEATS)
    recorder = pytester.inline_run(
        "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestUnhandledThreadExceptionWarning"
    )
    failed: dict[str, str] = {}
    passed = set()
    for report in recorder.getreports("pytest_runtest_logreport"):
        name = report.nodeid.split("::")[-1]
        if report.failed:
            failed[name] = report.longreprtext
        elif report.when == "call":
            passed.add(name)
    assert passed == {"test_plain", "test_slow_is_not_watched"}
    assert set(failed) == {
        "test_sleeps",
        "test_runs_a_command",
        "test_calls_os_system",
        "test_swallows_the_refusal",
        "test_sleeps_in_a_thread_it_started",
        "test_asks_for_the_server",
        "test_marked_server",
    }
    assert "calls time.sleep(0.001)" in failed["test_sleeps"]
    assert "starts a process" in failed["test_runs_a_command"]
    assert "calls os.system('true',)" in failed["test_calls_os_system"]
    assert "calls time.sleep(0.001)" in failed["test_swallows_the_refusal"]
    assert "calls time.sleep(0.001)" in failed["test_sleeps_in_a_thread_it_started"]
    assert "uses the fixture prefect_server" in failed["test_asks_for_the_server"]
    assert "is marked server" in failed["test_marked_server"]
    assert all("mark it @pytest.mark.slow" in text for text in failed.values())


def _imported_modules(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_tests_import_no_benchmark_module():
    """Benchmarks change with what they measure; what tests share is in
    tests/helpers.py. (tests/ruff.toml bans the import as well, for the editor.)"""
    offenders = {
        path.name: sorted(name for name in _imported_modules(path) if name.split(".")[0] == "benchmarks")
        for path in sorted((ROOT / "tests").glob("*.py"))
    }
    assert not {name: found for name, found in offenders.items() if found}


def test_the_import_check_sees_every_form_of_import(tmp_path):
    path = tmp_path / "t.py"
    path.write_text(
        "import benchmarks\nimport benchmarks.run as r\nfrom benchmarks import write_json\n"
        "def f():\n    from benchmarks.compiles import xla_compilations\n"
    )
    assert _imported_modules(path) == {"benchmarks", "benchmarks.run", "benchmarks.compiles"}


def test_a_warning_from_the_project_is_an_error_third_party_deprecations_are_not():
    with pytest.raises(UserWarning, match="ours"):
        warnings.warn("ours", stacklevel=1)
    with pytest.raises(DeprecationWarning, match="ours"):
        warnings.warn_explicit("ours", DeprecationWarning, "alcore/laplace.py", 1, module="alcore.laplace")
    warnings.warn_explicit("theirs", DeprecationWarning, "jax/_src/x.py", 1, module="jax._src.x")  # ignored
    with warnings.catch_warnings(record=True) as shown:  # the filters stay: shown warnings are recorded
        warnings.warn_explicit("theirs", UserWarning, "prefect/x.py", 1, module="prefect.x")
        # a package whose name merely starts like one of the project's is not the project
        warnings.warn_explicit("theirs too", UserWarning, "x.py", 1, module="tasks_extra.x")
    assert [str(w.message) for w in shown] == ["theirs", "theirs too"]
