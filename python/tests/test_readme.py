"""The README's Python section, run as written (with the tiny fixture model as the default
model, since tests have no network)."""

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import MODEL_DIR

ROOT = Path(__file__).resolve().parents[2]


def test_readme_python_section_runs():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the README's Python section has no python block"
    env = dict(os.environ, BIOMEDCLIP_MODEL=str(MODEL_DIR))
    for code in blocks:
        run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert "ihc.jpg" in run.stdout
