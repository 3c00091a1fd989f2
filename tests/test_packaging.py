"""pipenem as a Python tool: every package and shipped file in the distribution, commands by
shipped name from any folder, and the testbed's commands without torch."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from basics.shipped import find, listing
from tests.conftest import ROOT, pipenem


def test_the_distribution_lists_every_package() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, mapped = set(cfg["packages"]), cfg["package-dir"]
    on_disk = set()
    for top in ("basics", "testbed", "harness", "reports", "papers", "pipenem", "pipenem_data"):
        for init in (ROOT / top).rglob("__init__.py"):
            on_disk.add(".".join(init.parent.relative_to(ROOT).parts))
    for name, folder in mapped.items():
        assert (ROOT / folder / "__init__.py").is_file(), f"{folder}/ ships as {name}: it needs an __init__.py"
        on_disk.add(name)
    assert listed == on_disk


def test_every_shipped_file_is_package_data() -> None:
    """The wheel's package-data patterns cover every file under the shipped folders."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for name, folder in cfg["package-dir"].items():
        patterns = cfg["package-data"].get(name, []) + cfg["package-data"]["*"]
        for f in (ROOT / folder).rglob("*"):
            if f.is_file() and "__pycache__" not in f.parts and f.name != "__init__.py":
                rel = f.relative_to(ROOT / folder)
                assert any(rel.match(p) for p in patterns) or rel.suffix == ".py" and len(rel.parts) == 1, rel


def test_shipped_files_by_name_and_paths_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert {s.name for s in listing("topology")} >= {"ci-4stage", "beyond-topk-8stage", "scale/64stage"}
    assert find("suite", "ci-throughput", "SUITE") == find("suite", "ci-throughput.yaml", "SUITE")
    mine = tmp_path / "ci-4stage"
    mine.write_text("name: mine\nstages: 2\ndefaults: {bandwidth: 10Mbit}\n")
    monkeypatch.chdir(tmp_path)
    assert find("topology", "ci-4stage", "FILE") == Path("ci-4stage")  # a path that exists wins
    r = pipenem("topo", "validate", "nope-such-topology", cwd=tmp_path)
    assert r.returncode == 2 and "shipped" in r.stderr and "ci-4stage" in r.stderr


def test_commands_take_shipped_names_from_any_folder(tmp_path: Path) -> None:
    r = pipenem("topo", "show", "beyond-topk-8stage", cwd=tmp_path)
    assert r.returncode == 0 and "beyond-topk-8stage: 8 stages" in r.stdout, r.stderr
    listed = pipenem("list", cwd=tmp_path)
    assert listed.returncode == 0 and "quickstart" in listed.stdout and "ci-4stage" in listed.stdout


def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    for args, words in (
        (("nosuchcmd",), "No such command"),
        (("train", "--nosuch"), "No such option"),
        (("topo", "validate"), "Missing argument"),
    ):
        r = pipenem(*args, cwd=tmp_path)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr + r.stdout, (args, r.stderr)


def test_version_says_which_pipenem() -> None:
    r = pipenem("--version")
    assert r.returncode == 0 and r.stdout.startswith("pipenem ")


def test_testbed_commands_need_no_torch(tmp_path: Path) -> None:
    """Without torch (hidden from the interpreter), the testbed's commands run and the ones
    that need torch say so in one line, exit 2."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import importlib.abc, sys\n"
        "class _NoTorch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"
        "sys.meta_path.insert(0, _NoTorch())\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{hide}{os.pathsep}{ROOT}"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pipenem.main", *args], capture_output=True, text=True, cwd=tmp_path, env=env
        )

    assert cli("--help").returncode == 0
    ok = cli("topo", "validate", "beyond-topk-8stage")
    assert ok.returncode == 0 and "8 stages" in ok.stdout, ok.stderr
    assert cli("topo", "show", "ci-4stage").returncode == 0
    assert cli("list").returncode == 0
    for args in (("train", "ci-train"), ("run", "quickstart"), ("reproduce", "beyond-topk", "--quick")):
        r = cli(*args)
        assert r.returncode == 2 and "needs PyTorch: pip install torch==2.13.0" in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
