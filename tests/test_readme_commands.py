"""The README's main command, from a clean clone of the committed tree.

The environment is the one this test suite runs in (creating a second one would repeat the
several-minute install `make test` has just done); `make -o` keeps make from reinstalling into it,
and PYTHONPATH makes the clone's own code the code that runs. `.ci/run` on a fresh clone is what
proves the install step itself.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import skip_or_fail_in_ci

REPO = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Two commands.*?```bash\n(.*?)```", text, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def test_readme_names_exactly_two_commands_and_ci_runs_the_test_one():
    assert _readme_commands() == ["make run", "make test"]
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_main_command_from_a_clean_clone(tmp_path):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        skip_or_fail_in_ci("needs git and a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    venv = Path(sys.executable).parent.parent
    env = {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": str(clone / "src"),
        "HOME": str(tmp_path),
        "EDGECOMPRESS_NO_PROGRESS": "1",
    }
    args = (
        "--epochs 1 --device-classes rpi4-emulated --param bench_min_runs=50 --param bench_min_duration_s=0.2"
    )
    proc = subprocess.run(
        ["make", "run", f"VENV={venv}", "-o", f"{venv}/.edgecompress-installed", f"ARGS={args}"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "parent vs child" in proc.stdout and "MLflow store" in proc.stdout
    assert (clone / "edgecompress-runs" / "mlflow.db").exists()
