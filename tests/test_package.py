"""The installed package: one name, asyncps, that a user's own folders of the same names do not shadow."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata


def test_the_only_installed_top_level_name_is_asyncps():
    top_level = {name.split(".")[0] for name in metadata.packages_distributions() if "asyncps" in
                 metadata.packages_distributions()[name]}
    assert top_level == {"asyncps"}


def test_a_project_with_its_own_workers_ps_and_lab_folders_imports_and_runs_asyncps(tmp_path):
    for folder in ("workers", "ps", "lab", "optim", "protocols", "protos"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text(f"raise ImportError('the project\\'s own {folder}')\n")
    code = ("import asyncps, asyncps.workers, asyncps.lab.runner\n"
            "result = asyncps.run(backend='sim', overrides={'train.epochs': 0.2, 'out_dir': 'runs'})\n"
            "print(result.summary['final']['updates'])")
    # -P: the way the asyncps script starts Python; without it the working directory leads sys.path as well
    for flags in ([], ["-P"]):
        done = subprocess.run([sys.executable, *flags, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        assert int(done.stdout.split()[-1]) > 0
    assert json.loads((tmp_path / "runs" / "quickstart" / "summary.json").read_text())["failed"] is None
