"""Type-check cnnbench as it is installed: one package, its stages inside it.

`[tool.setuptools.package-dir]` installs `infer/` as `cnnbench.infer` and so on. mypy
cannot see that layout from the source tree, nor through the editable install (an import
hook it does not run), so this lays the installed package out as links under
`.venv/typecheck/` (rebuilt on every run, from pyproject's own mapping, so a new module is
checked at once), runs mypy on it and on the scripts in `benchmarks/` (not installed:
they import the package as users do) with the settings in `[tool.mypy]`, and reports the
source paths.

    .venv/bin/python tools/typecheck.py        # what `make lint` runs
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / ".venv" / "typecheck"


def link_tree() -> dict[str, str]:
    """Build the installed layout under TREE; returns {tree prefix: source prefix}."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    package_dir: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    shutil.rmtree(TREE, ignore_errors=True)
    top = TREE / "cnnbench"
    top.mkdir(parents=True)
    for source in (ROOT / package_dir["cnnbench"]).glob("*.py"):
        (top / source.name).symlink_to(source)
    prefixes = {f"{top.relative_to(ROOT)}/": f"{package_dir['cnnbench']}/"}
    for package, folder in package_dir.items():
        if package != "cnnbench":
            link = TREE.joinpath(*package.split("."))
            link.symlink_to(ROOT / folder, target_is_directory=True)
            prefixes[f"{link.relative_to(ROOT)}/"] = f"{folder}/"
    return prefixes


def main() -> int:
    from mypy import api

    prefixes = link_tree()
    os.chdir(ROOT)
    stdout, stderr, status = api.run(["--config-file", "pyproject.toml", "-p", "cnnbench"])
    scripts = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks").glob("*.py"))
    out, err, scripts_status = api.run(["--config-file", "pyproject.toml", *scripts])
    stdout, stderr, status = stdout + out, stderr + err, max(status, scripts_status)
    for tree, source in sorted(prefixes.items(), key=lambda kv: -len(kv[0])):
        stdout = stdout.replace(tree, source)
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
