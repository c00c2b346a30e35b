"""Installing as README says, until the package is on a registry (#20).

README installs from a clone (a path) and names the git repository in requirements;
``examples/github-actions.yml`` does the same through ``ADVROBUST_FROM``. The fresh
install itself (a new virtual environment, the checkout's path, the extras) is slow:
it is marked ``slow`` and run with ``-m slow``.
"""

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def test_readme_and_the_workflow_install_from_the_repository():
    readme = (ROOT / "README.md").read_text()
    section = readme[
        readme.index("## Install in your repository") : readme.index("## What you write")
    ]
    assert "not on PyPI yet" in section
    assert 'pip install "./pytest-advrobust[images,xdist]"' in section
    assert not re.search(r'pip install "pytest-advrobust\[', readme)  # nothing from a registry
    workflow = (ROOT / "examples" / "github-actions.yml").read_text()
    source = re.search(r"ADVROBUST_FROM: (\S+)", workflow).group(1)
    line = re.search(r'"(pytest-advrobust\[[^"]+)"', workflow).group(1)
    req = Requirement(line.replace("${ADVROBUST_FROM}", source))
    assert req.name == "pytest-advrobust" and {"html", "xdist"} <= req.extras
    assert req.url.startswith("git+https://") and "not on PyPI yet" in workflow


@pytest.mark.slow
def test_a_fresh_environment_installs_the_checkout_as_readme_says(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"{ROOT}[images,xdist]"],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (tmp_path / "test_it.py").write_text(
        "import pytest\n\n@pytest.mark.robust(threshold=1.0)\ndef test_skipped(): pass\n"
    )
    run = subprocess.run(
        [str(python), "-m", "pytest", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert "robustness test: pass --advrobust to run it" in run.stdout, run.stdout
    assert (env_dir / "bin" / "advrobust").exists()
    assert sys.executable != str(python)
