"""OpenMP's waiting on a busy machine (core/models/waiting.py): PASSIVE when other processes hold a core, torch's
default on an idle machine, and the user's choice whenever they made one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bigbird.models import waiting
from bigbird.models.waiting import wait_passively_when_busy, wait_policy


@pytest.mark.parametrize(
    ("environ", "argv", "load", "policy"),
    [
        ({}, [], 0.2, None),  # idle: torch's default, spinning, keeps small parallel regions fast
        ({}, [], 1.5, "PASSIVE"),  # another process holds a core
        ({}, ["classify", "docs/"], 8.0, "PASSIVE"),
        ({"OMP_WAIT_POLICY": "ACTIVE"}, [], 8.0, None),  # the user's choices are theirs
        ({"OMP_NUM_THREADS": "2"}, [], 8.0, None),
        ({"GOMP_SPINCOUNT": "0"}, [], 8.0, None),
        ({}, ["classify", "--threads", "2", "docs/"], 8.0, None),
        ({}, ["classify", "--threads=2"], 8.0, None),
    ],
)
def test_wait_policy(environ, argv, load, policy):
    assert wait_policy(environ, argv, load, cores=2) == policy


def test_the_policy_is_set_in_the_environment_only_when_busy(monkeypatch):
    environ: dict[str, str] = {}
    monkeypatch.setattr(waiting.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    wait_passively_when_busy(environ)
    assert environ == {}
    monkeypatch.setattr(waiting.os, "getloadavg", lambda: (3.0, 2.0, 1.0))
    wait_passively_when_busy(environ)
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_the_cli_sets_it_before_torch_loads():
    """bigbird_cli.app.main decides before any torch import: OpenMP reads the variable once, as it starts."""
    code = (
        "import os, sys; os.getloadavg = lambda: (5.0, 5.0, 5.0); sys.argv = ['bigbird', '--version']\n"
        "from bigbird_cli import app\n"
        "try: app.main()\n"
        "except SystemExit: pass\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k not in waiting.USER_SETTINGS}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "PASSIVE False", done.stderr
