"""The library installs as `bigbird` (from the repository's core/ folder), never as a top-level `core`, and works
beside a user's own `core` package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_library_folder_is_packaged_under_our_name():
    """pyproject lists packages by hand (the core/ → bigbird mapping rules out find:): a new subpackage must be
    listed, or the wheel would ship without it."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"bigbird": "core"}
    folders = {
        ".".join(("bigbird", *init.parent.relative_to(ROOT / "core").parts)).rstrip(".")
        for init in (ROOT / "core").rglob("__init__.py")
    } | {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "bigbird_cli").rglob("__init__.py")}
    assert set(setuptools["packages"]) == folders
    assert not any(name == "core" or name.startswith("core.") for name in setuptools["packages"])


def test_no_top_level_core_is_importable_from_elsewhere(tmp_path):
    """Outside the repository, `core` is not ours: only `bigbird` and `bigbird_cli` are installed."""
    code = "import importlib.util as u; print(u.find_spec('core') is None, u.find_spec('bigbird').name)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "bigbird"]


@pytest.mark.parametrize("where", ["cwd", "PYTHONPATH"])
def test_a_users_own_core_package_changes_nothing(tmp_path, where):
    """A Django-style project with its own `core` package, as the working folder or first on PYTHONPATH: the
    Python API and the `bigbird` command still work."""
    project = tmp_path / "project"
    (project / "core").mkdir(parents=True)
    (project / "core" / "__init__.py").write_text("MINE = True\n")
    env = {**os.environ, "PYTHONPATH": str(project)} if where == "PYTHONPATH" else dict(os.environ)
    cwd = project if where == "cwd" else tmp_path
    code = "import core, bigbird; from bigbird.tasks import QATask; print(core.MINE, bigbird.Document.__name__)"
    api = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    assert api.returncode == 0, api.stderr
    assert api.stdout.split() == ["True", "Document"]
    cli = subprocess.run(
        [sys.executable, "-m", "bigbird_cli", "--help"], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert cli.returncode == 0, cli.stderr
    assert "summarize" in cli.stdout


def test_every_public_name_is_importable_from_the_package():
    """The package docstring promises it, and `from bigbird import QATask` failed: the tasks and the errors a
    loading user catches (ConfigError, TaskError) were left out."""
    import bigbird
    import bigbird.tasks

    assert {"SummarizeTask", "QATask", "ClassifyTask", "MaskTask", "Task", "TaskError", "ConfigError"} <= set(
        bigbird.__all__
    )
    for name in bigbird.__all__:
        assert getattr(bigbird, name) is not None, name
    assert set(bigbird.tasks.__all__) <= set(dir(bigbird.tasks)) and "importlib" not in dir(bigbird.tasks)
