"""The steps kfp.local starts run with one OpenMP thread unless the user chose a number.

kfp.local starts each task with ``kfp/local/subprocess_task_handler.py``'s ``run_local_subprocess``
(kfp 2.17.3), which passes this process's environment on (``{**os.environ, **env_vars}``, or the
inherited environment when a task has none): the test starts its child through that same function.
"""

import os
import sys

import pytest
from kfp.local.subprocess_task_handler import run_local_subprocess

from pipelines.local import one_thread_per_step

PROBE = "import os, sys; sys.exit(int(os.environ.get('OMP_NUM_THREADS', '0')))"


def _child_threads(env_vars=None) -> int:
    return run_local_subprocess([sys.executable, "-c", PROBE], env_vars)


@pytest.mark.parametrize("env_vars", [None, {"JETLIB_PROBE": "1"}], ids=["inherited", "merged"])
def test_a_step_gets_one_thread_and_the_setting_is_gone_afterwards(monkeypatch, env_vars):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with one_thread_per_step():
        assert _child_threads(env_vars) == 1
    assert "OMP_NUM_THREADS" not in os.environ
    assert _child_threads(env_vars) == 0


def test_the_users_thread_count_is_kept(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    with one_thread_per_step():
        assert _child_threads() == 3
    assert os.environ["OMP_NUM_THREADS"] == "3"


def test_a_local_runs_tune_step_searches_in_the_step_even_in_a_pod(monkeypatch):
    """``pipelines.local`` runs every step with ``JETLIB_TUNE_BACKEND=optuna`` (kept if the user set one), so a
    kfp.local run from a pod (``KUBERNETES_SERVICE_HOST`` set, a notebook server) never submits Katib Experiments;
    outside a local run, ``auto`` in a pod means Katib."""
    from jetlib.errors import ConfigError
    from jetlib.tune.step import on_cluster
    from pipelines.local import _tune_here

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.delenv("JETLIB_TUNE_BACKEND", raising=False)
    assert on_cluster()
    probe = "import sys; from jetlib.tune.step import on_cluster; sys.exit(10 + on_cluster())"
    with _tune_here():
        assert run_local_subprocess([sys.executable, "-c", probe], None) == 10  # optuna in the step
    assert "JETLIB_TUNE_BACKEND" not in os.environ and on_cluster()
    monkeypatch.setenv("JETLIB_TUNE_BACKEND", "katib")
    with _tune_here():
        assert run_local_subprocess([sys.executable, "-c", probe], None) == 11  # the user's choice is kept
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert on_cluster()  # katib asked for outright
    monkeypatch.setenv("JETLIB_TUNE_BACKEND", "optuna ")
    with pytest.raises(ConfigError, match="JETLIB_TUNE_BACKEND"):
        on_cluster()


def test_a_local_run_leaves_print_as_it_found_it():
    """kfp.local's ``indented_print`` (kfp/local/logging_utils.py) swaps ``builtins.print`` per task; loop
    iterations side by side can leave an indented one behind, which then writes spaces to stdout before
    every later print in the process. ``pipelines.local`` puts the original back after the run."""
    import builtins

    from pipelines.local import _print_kept

    original = builtins.print
    with _print_kept():
        builtins.print = lambda *a, **k: original("    ", *a, **k)  # what a left-behind indent looks like
    assert builtins.print is original
