"""The wheel holds every package and data file of the source tree, and works once installed.

The tests run against the editable install, which reads the source tree and so would hide a
package or a data file the wheel leaves out (``bbox_lfm.students`` once was). This builds the
wheel from a copy of the tree, compares its contents with the tree, installs it alone into a
folder and imports from there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_FILES = ("pyproject.toml", "setup.py", "README.md")


def _expected(root: Path) -> set[str]:
    """Paths (inside the wheel) of every module and data file the source tree ships."""
    names = {str(p.relative_to(root)) for p in (root / "bbox_lfm").rglob("*.py") if "__pycache__" not in p.parts}
    names |= {f"bbox_lfm/tasks/sample/{p.name}" for p in (root / "bbox_lfm/tasks/sample").iterdir() if p.is_file()}
    names |= {f"bbox_lfm/providers/{p.name}" for p in (root / "providers").iterdir()
              if p.suffix in (".toml", ".py")}
    return names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for d in ("bbox_lfm", "providers"):
        shutil.copytree(ROOT / d, src / d, ignore=ignore)
    for f in BUILD_FILES:
        if (ROOT / f).exists():
            shutil.copy2(ROOT / f, src / f)
    out = tmp_path_factory.mktemp("wheel")
    # no build isolation: the venv's setuptools builds it, offline and in seconds
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(out)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    (whl,) = out.glob("bbox_lfm-*.whl")
    return whl


def test_the_wheel_holds_every_package_and_data_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        inside = {n for n in z.namelist() if not n.startswith("bbox_lfm-")}
    expected = _expected(ROOT)
    assert "bbox_lfm/students/__init__.py" in expected and "bbox_lfm/providers/openai.toml" in expected
    assert sorted(expected - inside) == [], "left out of the wheel"
    assert sorted(inside - expected) == [], "in the wheel but not in the source tree"


def test_the_installed_wheel_imports_alone(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                           str(target), str(wheel)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    code = ("import bbox_lfm, bbox_lfm.students, bbox_lfm.serve.protocol\n"
            "from bbox_lfm.profiles import available_profiles, load_profile\n"
            "from bbox_lfm.tasks.spec import load_task\n"
            "assert 'openai' in available_profiles(), available_profiles()\n"
            "load_profile('bbox-lfm')\n"
            "print(bbox_lfm.__file__, bbox_lfm.students.__file__, len(load_task('sample').split('train')))\n")
    # run from an empty folder, with only the installed copy ahead of the venv's packages
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target)}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    files = run.stdout.split()
    assert all(f.startswith(str(target)) for f in files[:2]), files
    assert int(files[2]) > 0  # the sample task's data came with it
