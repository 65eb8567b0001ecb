"""The README's main command, from a clean clone of the committed tree.

The packages are the ones this test suite runs with (installing them again would repeat the
several-minute install `make test` has just done): the clone's own scripts/dev-venv.sh makes a venv
layered on this one holding an editable install of the clone, so the clone's own code (src/ and the
package-dir-mapped components/ and pipelines/) is the code that runs, and `make -o` keeps make from
reinstalling into it. `.ci/run` on a fresh clone is what proves the install step itself.
"""

import json
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.conftest import skip_or_fail_in_ci

REPO = Path(__file__).resolve().parents[1]
# Where the clone's interpreter imports the three package roots from (an editable install maps them).
WHERE = (
    "import importlib, json; "
    "print(json.dumps({n: importlib.import_module(n).__file__ "
    "for n in ('edgecompress', 'edgecompress.components', 'edgecompress.pipelines')}))"
)


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
    venv = tmp_path / "venv"
    suite_site = Path(sysconfig.get_path("purelib"))
    suite_install = {p.name: p.stat().st_mtime_ns for p in suite_site.glob("*edgecompress*")}
    made = subprocess.run(
        ["bash", str(clone / "scripts" / "dev-venv.sh"), str(Path(sys.executable).parent.parent), str(venv)],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-3000:]
    # the suite's own install is left as it was (pip sees it as outside the layered venv)
    assert {p.name: p.stat().st_mtime_ns for p in suite_site.glob("*edgecompress*")} == suite_install
    env = {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "EDGECOMPRESS_NO_PROGRESS": "1",
    }
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", WHERE], env=env, capture_output=True, text=True, timeout=120
    )
    assert where.returncode == 0, where.stderr[-3000:]
    assert json.loads(where.stdout) == {
        "edgecompress": str(clone / "src" / "edgecompress" / "__init__.py"),
        "edgecompress.components": str(clone / "components" / "__init__.py"),
        "edgecompress.pipelines": str(clone / "pipelines" / "__init__.py"),
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
