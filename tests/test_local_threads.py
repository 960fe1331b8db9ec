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
