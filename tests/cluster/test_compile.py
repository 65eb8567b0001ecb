"""`edgecompress compile`: KFP IR YAML with the image, Secrets, selectors, GPU limits, caching and
parameters the platform options ask for, and never a credential inline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from edgecompress.cli import main
from edgecompress.platform import PlatformConfig
from tests.conftest import run_cli

FAKE_SECRETS = {
    "MLFLOW_TRACKING_PASSWORD": "mlflow-pa55-do-not-leak",
    "AWS_SECRET_ACCESS_KEY": "aws-s3cr3t-do-not-leak",
    "AWS_ACCESS_KEY_ID": "AKIADONOTLEAK",
    "EDGECOMPRESS_FARM_CLIENT_TOKEN": "farm-t0ken-do-not-leak",
    "EDGECOMPRESS_FARM_AGENT_TOKEN": "farm-agent-t0ken-do-not-leak",
}


def load(path: Path) -> dict:
    """The pipeline spec and its platform spec (a second YAML document) as one mapping."""
    docs = list(yaml.safe_load_all(path.read_text()))
    return {k: v for doc in docs for k, v in doc.items()}


def executors(spec: dict) -> dict[str, dict]:
    """component function name -> list of executors' container specs."""
    return spec["deploymentSpec"]["executors"]


def k8s_executors(spec: dict) -> dict[str, dict]:
    return spec.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})


def all_tasks(spec: dict) -> dict[str, dict]:
    """Every task of the pipeline, nested DAGs (exit handler, dsl.If, inner pipelines) included, by
    its task name; container tasks only (those with an executor)."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    out = {}
    for dag in dags:
        for name, task in dag["tasks"].items():
            comp = spec["components"][task["componentRef"]["name"]]
            if "executorLabel" in comp:
                out[name] = {**task, "executor": comp["executorLabel"]}
    return out


def component_of(executor: str) -> str:
    """exec-edge-benchmark-2 -> edge_benchmark"""
    return re.sub(r"-\d+$", "", executor.removeprefix("exec-")).replace("-", "_")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("compiled")
    result = run_cli(
        "compile", "--all", "--output-dir", str(out), "--registry", "registry.example.com/ml/", "--tag", "1.2.3",
        "--benchmark-node-selector", "edgecompress.io/device-class=rpi4",
        "--benchmark-toleration", "edgecompress.io/device=rpi4:NoSchedule", "--train-gpus", "1",
        "--cache", "evaluate=off", "--image-pull-secret", "regcred",
        env=FAKE_SECRETS, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    path = out / "edge-compression.yaml"
    assert f"wrote {path}" in result.stdout
    return path, load(path), path.read_text()


def test_every_task_uses_the_configured_image(compiled):
    _, spec, _ = compiled
    images = {ex["container"]["image"] for ex in executors(spec).values()}
    assert images == {"registry.example.com/ml/components:1.2.3"}


def test_credentials_come_from_secrets_never_inline(compiled):
    _, spec, text = compiled
    for value in FAKE_SECRETS.values():
        assert value not in text
    k8s = k8s_executors(spec)
    assert set(k8s) == set(executors(spec))  # every task has Kubernetes settings
    tracked = {"exec-" + c.replace("_", "-") for c in PlatformConfig().tracked_components}
    for name, cfg in k8s.items():
        secrets = {}
        for s in cfg.get("secretAsEnv", []):  # a Secret may come in several mappings
            for m in s["keyToEnv"]:
                secrets.setdefault(s["secretName"], {}).setdefault(m["secretKey"], set()).add(m["envVar"])
        secrets = {name: {k: "+".join(sorted(v)) for k, v in keys.items()} for name, keys in secrets.items()}
        if name.rstrip("-0123456789") not in tracked:  # least privilege: e.g. isa-check logs nothing
            assert not secrets, name
            continue
        assert secrets["edgecompress-mlflow"]["tracking-uri"] == "MLFLOW_TRACKING_URI"
        assert secrets["edgecompress-s3"]["secret-access-key"] == "AWS_SECRET_ACCESS_KEY"
        # MLflow's S3 client and edgecompress's own (boto3: AWS_ENDPOINT_URL) reach the same endpoint
        assert secrets["edgecompress-s3"]["endpoint-url"] == "AWS_ENDPOINT_URL+MLFLOW_S3_ENDPOINT_URL"
        assert ("edgecompress-farm" in secrets) == name.startswith("exec-edge-benchmark"), name
        if "edgecompress-farm" in secrets:
            assert secrets["edgecompress-farm"] == {"client-token": "EDGECOMPRESS_FARM_CLIENT_TOKEN"}
        assert cfg["imagePullSecret"][0]["secretName"] == "regcred"
        for container in executors(spec)[name]["container"].get("env", []):
            assert container["name"] not in {"MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY"}


def test_benchmark_tasks_pinned_to_device_nodes_only(compiled):
    _, spec, _ = compiled
    for name, cfg in k8s_executors(spec).items():
        if name.startswith("exec-edge-benchmark"):
            assert cfg["podMetadata"]["labels"] == {
                "edgecompress.io/farm-client": "true"
            }  # chart NetworkPolicy
            assert cfg["nodeSelector"]["labels"] == {"edgecompress.io/device-class": "rpi4"}
            assert cfg["tolerations"] == [
                {
                    "key": "edgecompress.io/device",
                    "operator": "Equal",
                    "value": "rpi4",
                    "effect": "NoSchedule",
                }
            ]
        else:
            assert "nodeSelector" not in cfg and "tolerations" not in cfg, name


def test_gpu_limit_on_training_only(compiled):
    _, spec, _ = compiled
    for name, ex in executors(spec).items():
        accel = ex["container"].get("resources", {}).get("accelerator")
        if name == "exec-train":
            assert accel["resourceType"] == "nvidia.com/gpu" and accel["resourceCount"] in ("1", 1)
        else:
            assert accel is None, name


def test_caching_per_task(compiled):
    _, spec, _ = compiled
    tasks = all_tasks(spec)
    caching = {name: t.get("cachingOptions", {}).get("enableCache", False) for name, t in tasks.items()}
    assert caching["evaluate"] is False and caching["evaluate-2"] is False  # --cache evaluate=off
    assert caching["train"] is True  # KFP default kept
    assert caching["quantize"] is False  # its parent check measures latency: never cached
    assert caching["edge-benchmark"] is False  # the pipeline's own choice: latency is never cached


def test_pipeline_parameters_keep_their_defaults(compiled):
    _, spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["epochs"] == {"defaultValue": 10.0, "isOptional": True, "parameterType": "NUMBER_INTEGER"}
    assert params["device_classes"]["defaultValue"] == ["rpi4-emulated", "jetson-orin-nano-emulated"]
    assert params["farm_url"]["parameterType"] == "STRING"


def test_default_compile_has_default_image_and_secrets(tmp_path, monkeypatch):
    for var in ("EDGECOMPRESS_IMAGE", "EDGECOMPRESS_REGISTRY", "EDGECOMPRESS_IMAGE_TAG"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "p.yaml"
    result = run_cli("compile", "--output", str(out))
    assert result.returncode == 0, result.stderr
    spec = load(out)
    from edgecompress import __version__

    assert {ex["container"]["image"] for ex in executors(spec).values()} == {
        f"ghcr.io/edgecompress/components:{__version__}"
    }
    assert all("nodeSelector" not in c for c in k8s_executors(spec).values())
    tracked = PlatformConfig().tracked_components
    assert {n for n, c in k8s_executors(spec).items() if c.get("secretAsEnv")} == {
        n for n in executors(spec) if component_of(n) in tracked
    }


def test_platform_config_file_and_disabling_secrets(tmp_path):
    cfg = tmp_path / "platform.yaml"
    cfg.write_text(
        "image: my.registry/edge:7\nmlflow_secret: ''\ns3_secret: ''\nfarm_secret: ''\n"
        "benchmark_tolerations:\n  - {key: jetson, operator: Exists, effect: NoExecute}\n"
    )
    out = tmp_path / "p.yaml"
    result = run_cli("compile", "--output", str(out), "--platform-config", str(cfg))
    assert result.returncode == 0, result.stderr
    spec = load(out)
    assert {ex["container"]["image"] for ex in executors(spec).values()} == {"my.registry/edge:7"}
    k8s = k8s_executors(spec)
    assert all("secretAsEnv" not in c for c in k8s.values())
    assert k8s["exec-edge-benchmark"]["tolerations"] == [
        {"key": "jetson", "operator": "Exists", "effect": "NoExecute"}
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--benchmark-toleration", "dev=pi:Sometimes"], "effect 'Sometimes'"),
        (["--cache", "train=maybe"], "--cache train=maybe: expected on or off"),
        (["--benchmark-node-selector", "novalue"], "expected NAME=VALUE"),
        (["--train-gpus", "-1"], "train_gpus must be a non-negative integer"),
        (["--chain", "quantize,shrink"], "unknown steps ['shrink']"),
        (["--cache", "quantise=off"], "caching names unknown components ['quantise']"),
        (["--cache", "edge_benchmark=on"], "caching edge_benchmark=on refused"),
        (["--cache", "isa_check=on"], "caching isa_check=on refused"),
        (["--cpu", "trian=1"], "resources names unknown components ['trian']"),
        (["--memory", "train=:2Gi"], "--memory train=:2Gi: expected COMPONENT=REQUEST[:LIMIT]"),
        (["--cache", "promote=off"], "pipeline 'edge-compression' cannot honour caching for ['promote']"),
        (
            ["--cpu", "drift_check=2"],
            "pipeline 'edge-compression' cannot honour resources for ['drift_check']",
        ),
    ],
)
def test_bad_platform_options_exit_2(tmp_path, capsys, args, message):
    out = tmp_path / "p.yaml"
    assert main(["compile", "--output", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error:")
    assert not out.exists()


def test_unknown_platform_config_key(tmp_path, capsys):
    cfg = tmp_path / "platform.yaml"
    cfg.write_text("mlflow_secrets: x\n")
    assert main(["compile", "--output", str(tmp_path / "p.yaml"), "--platform-config", str(cfg)]) == 2
    assert f"platform config {cfg}: unknown keys ['mlflow_secrets']" in capsys.readouterr().err


NON_DEFAULT = (
    "--registry", "registry.example.com/team", "--tag", "7.7.7", "--image-pull-secret", "pullme",
    "--mlflow-secret", "my-mlflow", "--s3-secret", "my-s3", "--farm-secret", "my-farm",
    "--benchmark-node-selector", "edgecompress.io/device-class=jetson", "--benchmark-toleration", "gpu:NoExecute",
    "--train-gpus", "2", "--cpu", "train=3:4", "--memory", "evaluate=1500Mi:3Gi", "--retries", "5",
    "--cache", "train=off",
)  # fmt: skip


@pytest.fixture(scope="module")
def every_pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("all")
    result = run_cli("compile", "--all", "--output-dir", str(out), *NON_DEFAULT, timeout=300)
    assert result.returncode == 0, result.stderr
    specs = {p.stem: load(p) for p in sorted(out.glob("*.yaml"))}
    assert set(specs) == {"edge-compression", "nas", "retrain-on-drift", "sensitivity"}
    return specs


def test_every_task_of_every_pipeline_gets_the_platform(every_pipeline):
    """Image, pull secret, run id from the pod label, Secrets, selectors, GPUs, resources, retries and
    caching on every task of every pipeline (retrain-on-drift's inner tasks included)."""
    from edgecompress.platform import DEFAULT_RESOURCES, NEVER_CACHED, PlatformConfig

    config = PlatformConfig()
    for pipeline, spec in every_pipeline.items():
        tasks = all_tasks(spec)
        k8s = k8s_executors(spec)
        seen = set()
        assert set(k8s) == set(executors(spec)), pipeline
        for task_name, task in tasks.items():
            where = f"{pipeline}/{task_name}"
            ex, comp = task["executor"], component_of(task["executor"])
            seen.add(comp)
            container, cfg = executors(spec)[ex]["container"], k8s[ex]
            assert container["image"] == "registry.example.com/team/components:7.7.7", where
            assert cfg["imagePullSecret"][0]["secretName"] == "pullme", where
            assert {
                "fieldPath": "metadata.labels['pipeline/runid']",
                "name": "EDGECOMPRESS_PIPELINE_RUN_ID",
            } in cfg["fieldPathAsEnv"], where
            secrets = {s["secretName"] for s in cfg.get("secretAsEnv", [])}
            expected = {"my-mlflow", "my-s3"} if comp in config.tracked_components else set()
            expected |= {"edgecompress-nas-storage"} if comp in config.study_components else set()
            assert secrets == expected | ({"my-farm"} if comp in config.farm_components else set()), where
            if comp == "edge_benchmark":
                assert cfg["nodeSelector"]["labels"] == {"edgecompress.io/device-class": "jetson"}, where
                assert cfg["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoExecute"}], (
                    where
                )
            else:
                assert "nodeSelector" not in cfg and "tolerations" not in cfg, where
            resources = container.get("resources", {})
            accel = resources.get("accelerator")
            if comp in config.training_components:
                assert accel["resourceType"] == "nvidia.com/gpu" and str(accel["resourceCount"]) == "2", where
            else:
                assert accel is None, where
            want = {**DEFAULT_RESOURCES.get(comp, {})}
            want.update({"train": {"cpu_request": "3", "cpu_limit": "4"}}.get(comp, {}))
            want.update({"evaluate": {"memory_request": "1500Mi", "memory_limit": "3Gi"}}.get(comp, {}))
            assert want, f"{where}: no CPU/memory requests and limits"
            got = {
                "cpu_request": resources.get("resourceCpuRequest"),
                "cpu_limit": resources.get("resourceCpuLimit"),
                "memory_request": resources.get("resourceMemoryRequest"),
                "memory_limit": resources.get("resourceMemoryLimit"),
            }
            assert {k: v for k, v in got.items() if v} == want, where
            retry = task.get("retryPolicy")
            if comp in config.retry_components:
                assert retry["maxRetryCount"] == 5 and retry["backoffDuration"] == "30s", where
            else:
                assert retry is None, where
            cached = task.get("cachingOptions", {}).get("enableCache", False)
            if comp in NEVER_CACHED or comp == "train":
                assert not cached, where
        if pipeline == "sensitivity":
            assert {
                "train",
                "sensitivity_units",
                "sensitivity_unit",
                "sensitivity_combine",
                "end_pipeline_run",
            } <= seen
            continue
        assert {"train", "evaluate", "edge_benchmark", "isa_check", "end_pipeline_run"} <= seen, pipeline
        if pipeline == "retrain-on-drift":
            assert {"drift_check", "promote"} <= seen
        if pipeline == "nas":  # the fan-out's tasks, inside its nested pipeline and ParallelFor, too
            assert {"nas_create_study", "nas_worker", "nas_finish"} <= seen


def test_an_exit_handler_ends_the_mlflow_parent_run(every_pipeline):
    for pipeline, spec in every_pipeline.items():
        root = spec["root"]["dag"]["tasks"]
        end = next(k for k, t in root.items() if t["componentRef"]["name"] == "comp-end-pipeline-run")
        assert root[end]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED", pipeline
        handler = root[end]["inputs"]["parameters"]["status"]["taskFinalStatus"]["producerTask"]
        # the whole pipeline runs under the handler: nothing else at the top level
        assert handler.startswith("exit-handler") and set(root) == {handler, end}, pipeline
        inputs = root[end]["inputs"]["parameters"]
        assert inputs["experiment"] == {"componentInputParameter": "experiment"}, pipeline
        assert inputs["track"] == {"componentInputParameter": "track"}, pipeline


def test_a_builder_without_platform_is_an_error(monkeypatch):
    from edgecompress.cli import cluster
    from edgecompress.errors import ConfigError

    monkeypatch.setattr(cluster, "pipeline_builders", lambda: {"bare": lambda chain=("quantize",): None})
    with pytest.raises(ConfigError, match="takes no platform config"):
        cluster.build("bare", PlatformConfig())
