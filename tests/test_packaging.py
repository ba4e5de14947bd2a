"""The wheel ships every package and the recipes, and an installed package finds its recipes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESOLVE = """
import json, accelyolo
from accelyolo.core.config import RECIPES_DIR, load_config, resolve_recipe
cfg = load_config("yolov5-coco128")  # hyp/scratch-low.yaml and data/coco128.yaml, relative to the recipe
print(json.dumps({"package": accelyolo.__file__, "recipes_dir": str(RECIPES_DIR),
                  "demo": str(resolve_recipe("demo")), "coco128": str(resolve_recipe("coco128")),
                  "data": cfg.data, "box": cfg.box}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built offline from a copy of the sources (so no build/ folder lands in the repository)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("accelyolo", "recipes"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w"]
    proc = subprocess.run([*cmd, str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (built,) = out.glob("accelyolo-*.whl")
    return built


@pytest.mark.slow
def test_wheel_holds_every_package_and_recipe(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "recipes").rglob("*.yaml"))
    assert {"recipes/demo.yaml", "recipes/hyp/scratch-low.yaml", "recipes/data/coco128.yaml"} <= set(recipes)
    assert {f"accelyolo/{r}" for r in recipes} <= names
    modules = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "accelyolo").rglob("*.py"))
    missing = [m for m in modules if m not in names]
    assert not missing, f"not in the wheel (add the package to [tool.setuptools] packages): {missing}"


@pytest.mark.slow
def test_installed_package_finds_its_recipes(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", RESOLVE], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout)
    assert Path(found["package"]).is_relative_to(site)  # the unzipped copy, not the checkout
    for key in ("recipes_dir", "demo", "coco128", "data"):
        assert Path(found[key]).is_relative_to(site), (key, found[key])
    assert Path(found["demo"]).name == "demo.yaml" and Path(found["coco128"]).name == "coco128.yaml"
    assert Path(found["data"]) == site / "accelyolo" / "recipes" / "data" / "coco128.yaml"
    assert found["box"] == 0.05  # read from hyp/scratch-low.yaml (the default is None)


def test_source_checkout_uses_the_top_level_recipes():
    from accelyolo.core.config import RECIPES_DIR, resolve_recipe

    assert RECIPES_DIR == REPO / "recipes"
    assert resolve_recipe("demo") == REPO / "recipes" / "demo.yaml"
