"""What `edgecompress run` prints: the summary (the tasks' executor JSON and logs go to a log file,
`-v` streams them), no MLflow store with --no-track, and a failing task's own error line in the final
message, without tracebacks or ANSI colour when the output is not a terminal."""

from tests.conftest import FAST_RUN_ARGS, run_cli


def test_run_prints_the_summary_not_the_task_logs(tmp_path):
    proc = run_cli(
        "run", "--epochs", "1", "--no-track", "--output-dir", str(tmp_path), *FAST_RUN_ARGS, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "parent vs child" in proc.stdout and "gate rule:" in proc.stdout
    assert len(out.splitlines()) < 60, out  # was 1,136 lines on d9a55b6
    for noise in ("executor_input", "Streamed logs", "Traceback", "\x1b[", "MLflow store", "mlflow ui"):
        assert noise not in out, noise
    log = (tmp_path / "pipeline.log").read_text()
    assert "Got executor_input" in log and "Executing task 'train'" in log and "\x1b[" not in log


def test_a_failing_task_names_its_own_error(tmp_path):
    proc = run_cli(
        "run", "--epochs", "1", "--no-track", "--model", "nosuchmod:f", "--output-dir", str(tmp_path), *FAST_RUN_ARGS,
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the edge-compression pipeline failed in task 'train': "), last
    assert "cannot import model factory module 'nosuchmod'" in last, last
    assert str(tmp_path / "pipeline.log") in last
    assert "Traceback" not in out and "\x1b[" not in out, out[-3000:]
    assert "Traceback" in (tmp_path / "pipeline.log").read_text()  # the full log is kept


def test_verbose_streams_the_task_logs(tmp_path):
    proc = run_cli(
        "-v", "run", "--epochs", "1", "--no-track", "--model", "nosuchmod:f", "--output-dir", str(tmp_path), *FAST_RUN_ARGS,
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Got executor_input" in proc.stdout and "\x1b[" not in proc.stdout + proc.stderr
    assert "cannot import model factory module 'nosuchmod'" in proc.stderr.strip().splitlines()[-1]
