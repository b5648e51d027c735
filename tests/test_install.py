"""The package works when installed, not only from a checkout: the wheel built from ``pyproject.toml`` carries every
file of ``conf/`` (as ``train/conf``) and the console scripts, and an installed copy, run from a folder outside the
checkout, composes its Hydra configuration from the packaged files."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if sys.version_info >= (3, 11):
    import tomllib
else:  # the dev extra installs tomli on Python 3.10
    import tomli as tomllib


def source_folders() -> list[str]:
    """The top-level folders the wheel is built from, read from pyproject.toml (packages and package-dir)."""
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = setup.get("package-dir", {})
    return sorted({mapped.get(p, p).split("/")[0] if p in mapped else p.split(".")[0] for p in setup["packages"]})


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built (offline, no dependencies) from a copy of the sources, so the checkout gets no build/."""
    import shutil

    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in source_folders():
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(tmp / "dist"), str(src)], check=True, capture_output=True)
    (whl,) = (tmp / "dist").glob("ghn_archspace-*.whl")
    return whl


def test_the_wheel_carries_every_config_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    yamls = sorted(p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml"))
    assert "train.yaml" in yamls and "debug/default.yaml" in yamls
    missing = [y for y in yamls if f"train/conf/{y}" not in names]
    assert not missing, f"conf/ files missing from the wheel (add their group to pyproject.toml): {missing}"
    assert "train/cli.py" in names and "ghn/model.py" in names and "archspace/models.py" in names


def test_the_wheel_declares_the_console_scripts(wheel):
    zf = zipfile.ZipFile(wheel)
    (ep,) = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = zf.read(ep).decode()
    for line in ("ghn-train = train.cli:train_main", "ghn-eval = train.cli:eval_main", "ghn = ghn.cli:main",
                 "archspace = archspace.cli:main", "rank = train.rank_cli:add_rank_parser",
                 "finetune = train.finetune_cli:add_finetune_parser"):
        assert line in text, line


def test_an_installed_copy_composes_the_packaged_config(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what `pip install --target` does with a pure-Python wheel
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("GHN_CONF_DIR", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)  # ahead of the checkout's editable install; dependencies from this venv
    script = ("import sys, train, train.config; print(train.__file__); print(train.config.find_conf_dir('eval'));"
              "sys.argv = ['ghn-train', '--cfg', 'job', 'debug=default'];"
              "from train.cli import train_main; sys.exit(train_main())")
    done = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == str(site / "train" / "__init__.py")
    assert lines[1] == str(site / "train" / "conf")
    assert "steps: 6" in done.stdout and "meta_batch_size: 2" in done.stdout  # debug/default.yaml was applied
