"""With CI=true no test skips for something `make test` installs: it fails (a skip would hide a
missing install step on CI's fresh machine). Every skip goes through tests.conftest.skip_or_fail_in_ci."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP_CALLS = re.compile(
    r"pytest\.(skip\(|importorskip\(|xfail\(|mark\.skip\b|mark\.skipif\b|mark\.xfail\b)"
    r"|\bskipTest\(|unittest\.skip|@skip(If|Unless)?\b|\bexpectedFailure\b"
)


def test_no_test_skips_except_through_the_ci_aware_helper():
    offenders = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if SKIP_CALLS.search(line) and path.name != "test_skip_policy.py":
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    helper = [o for o in offenders if o.startswith("tests/conftest.py:")]
    assert len(helper) == 1, helper  # the helper's own pytest.skip
    assert [o for o in offenders if o not in helper] == [], "skip through skip_or_fail_in_ci instead"


SKIP_FORMS = {
    "xfail_mark": "import pytest\n\n@pytest.mark.xfail(reason='flaky')\ndef test_x():\n    assert False\n",
    "unittest_skip": "import unittest\n\nclass T(unittest.TestCase):\n    def test_x(self):\n"
    "        self.skipTest('no thing')\n",
    "empty_parametrisation": "import pytest\n\n@pytest.mark.parametrize('n', [])\ndef test_x(n):\n    pass\n",
    "skip_mark": "import pytest\n\n@pytest.mark.skip(reason='later')\ndef test_x():\n    pass\n",
}


@pytest.mark.parametrize("form", sorted(SKIP_FORMS))
def test_every_skip_form_fails_in_ci(tmp_path, form):
    """d9a55b6 caught pytest.skip only: xfail, unittest's skips and empty parametrisations passed CI."""
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_runtest_makereport  # noqa: F401\n"
    )
    (tmp_path / "test_probe.py").write_text(SKIP_FORMS[form])
    env = {**os.environ, "CI": "true", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode != 0 and re.search(r"\b1 (failed|error)\b", result.stdout), result.stdout[-2000:]
    assert "CI=true: a test may not skip or xfail" in result.stdout


def test_ci_run_sets_ci_itself():
    """CI must not depend on the runner exporting CI=true."""
    text = (REPO / ".ci" / "run").read_text()
    assert "export CI=true" in text and "make test" in text


@pytest.mark.parametrize("ci", ["true", ""])
def test_a_missing_prerequisite_fails_in_ci_and_skips_elsewhere(tmp_path, ci):
    """CI must not hide a missing install step behind a skip."""
    (tmp_path / "test_probe.py").write_text(
        "from tests.conftest import skip_or_fail_in_ci\n\n"
        "def test_needs_something():\n    skip_or_fail_in_ci('something not installed')\n"
    )
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                             str(tmp_path / "test_probe.py")], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    expected = "1 failed" if ci else "1 skipped"
    assert expected in result.stdout, result.stdout[-2000:]
    assert "something not installed" in result.stdout
