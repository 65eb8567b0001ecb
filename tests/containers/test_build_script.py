"""docker/build.sh and its build context: one build at a time per context, and a wheel that always
lands at app/<wheel> (CI lost its staged wheel to a test that wrote into the context without the lock,
and once to a `mv` that nested the wheel one level too deep).

These tests give build.sh a private context (EDGECOMPRESS_BUILD_CONTEXT) and a stand-in engine that
records its arguments, so they never touch the context a real image build may be using, and need no
podman: they test the script's own logic. The real build runs in the container fixture.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.containers.conftest import REPO

WAIT_S = 8  # the unlocked script reaches its `rm -rf app` within ~2 s
BUILD_SH = REPO / "docker" / "build.sh"


def _private_context(tmp_path: Path) -> Path:
    """A build context whose dependency wheelhouse counts as resolved (build.sh reuses it), so a run
    only builds the project wheel."""
    ctx = tmp_path / "context"
    (ctx / "deps-cpu").mkdir(parents=True)
    stamp = hashlib.sha256(
        (REPO / "requirements.lock").read_bytes() + (REPO / "pyproject.toml").read_bytes() + b"cpu\n"
    ).hexdigest()[:16]
    (ctx / "deps-cpu.stamp").write_text(stamp + "\n")
    return ctx


def _fake_engine(tmp_path: Path) -> Path:
    """Stands in for podman: records the build's arguments and the context's app/ at that moment."""
    engine = tmp_path / "engine"
    engine.write_text(
        '#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$(dirname "$0")/engine-args"\n'
        'ctx="${@: -1}"; find "$ctx/app" | sort > "$(dirname "$0")/engine-saw-app"\n'
    )
    engine.chmod(0o755)
    return engine


def _env(ctx: Path, engine: Path, python: str = sys.executable) -> dict[str, str]:
    return {**os.environ, "PYTHON": python, "ENGINE": str(engine), "EDGECOMPRESS_BUILD_CONTEXT": str(ctx)}


def _build(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(BUILD_SH), "--tag", "localhost/edgecompress-script-test:unused"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip


def test_build_puts_exactly_the_wheel_at_app_of_its_own_context(tmp_path):
    ctx, engine = _private_context(tmp_path), _fake_engine(tmp_path)
    result = _build(_env(ctx, engine))
    assert result.returncode == 0, result.stderr[-3000:]
    saw = (tmp_path / "engine-saw-app").read_text().split()
    assert [Path(p).relative_to(ctx).as_posix() for p in saw[1:]] == [f"app/{Path(saw[1]).name}"] and Path(
        saw[1]
    ).name.startswith("edgecompress-"), saw
    assert (tmp_path / "engine-args").read_text().splitlines()[-1] == str(ctx)
    assert not list(ctx.glob("app.*")), "the staging folder was left behind"
    assert not (REPO / "docker" / ".context" / "app" / "in-use-by-another-build").exists()


def test_a_folder_written_into_the_context_during_the_build_stops_it_instead_of_nesting_the_wheel(tmp_path):
    """The CI failure, made deterministic: app/ appears after build.sh cleared it (another writer that
    ignored the lock); the old `mv staging app` then moved the wheel to app/app.XXXXXX/."""
    ctx, engine = _private_context(tmp_path), _fake_engine(tmp_path)
    intruder = tmp_path / "python"
    intruder.write_text(
        "#!/usr/bin/env bash\n"
        "# while the project wheel is being built, another writer creates app/ without the lock\n"
        'case " $* " in *" wheel "*" --no-deps "*) mkdir -p "$CTX/app" && touch "$CTX/app/intruder";; esac\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    intruder.chmod(0o755)
    env = {**_env(ctx, engine, python=str(intruder)), "CTX": str(ctx)}
    result = _build(env)
    assert result.returncode != 0, "build.sh went on with a wheel moved into a folder it did not own"
    assert "appeared while this build held" in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "engine-args").exists(), "the image build ran anyway"
    assert sorted(p.name for p in (ctx / "app").iterdir()) == ["intruder"], "the wheel went into app/"
    assert not list(ctx.glob("app.*")), "the staging folder was left behind"


def test_a_second_build_waits_for_the_first_and_touches_nothing(tmp_path):
    ctx, engine = _private_context(tmp_path), _fake_engine(tmp_path)
    with open(ctx / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # what a running build holds, taken before touching app/
        (ctx / "app").mkdir()
        sentinel = ctx / "app" / "in-use-by-another-build"
        sentinel.write_text("")
        proc = subprocess.Popen(["bash", str(BUILD_SH), "--tag", "localhost/edgecompress-lock-test:unused"],
                                cwd=REPO, env=_env(ctx, engine), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)  # fmt: skip
        try:
            time.sleep(WAIT_S)
            assert proc.poll() is None, f"build.sh did not wait for the lock:\n{proc.stderr.read().decode()}"
            assert sentinel.exists(), "build.sh deleted app/ while another build held the lock"
            assert not list(ctx.glob("app.*")), "build.sh started staging while another build held the lock"
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
