"""The Helm chart, rendered with the real Helm library (helm-python-sdk embeds it): lint, schema,
every rendered manifest validated against the Kubernetes API schemas (kubernetes-validate, strict),
and the properties the chart promises (security, least privilege, Secrets, device classes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import skip_or_fail_in_ci

try:
    import helm_python as helm
    import kubernetes_validate
except ImportError as exc:  # both are in requirements.lock, which `make test` installs
    skip_or_fail_in_ci(f"{exc.name} not installed (pip install -r requirements.lock)")

CHART = Path(__file__).resolve().parents[2] / "charts" / "edgecompress"
VALUES_FILES = sorted(p.name for p in CHART.glob("values-*.yaml"))
KUBE_VERSION = "1.30.0"


def values_of(name: str | None) -> dict:
    return yaml.safe_load((CHART / name).read_text()) if name else {}


def render(values: dict, namespace: str = "farm") -> list[dict]:
    with helm.Chart.load(CHART) as chart:
        out = chart.render(values, name="ec", namespace=namespace, is_install=True)
    docs = []
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs: list[dict]) -> list[dict]:
    specs = []
    for d in docs:
        if d["kind"] in ("Deployment", "DaemonSet"):
            specs.append(d["spec"]["template"]["spec"])
        elif d["kind"] == "CronJob":
            specs.append(d["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return specs


def test_values_files_are_documented():
    assert VALUES_FILES == ["values-devices.yaml", "values-postgres.yaml"]
    for name in VALUES_FILES:
        assert (CHART / name).read_text().startswith("#")


@pytest.mark.parametrize("values_file", [None, *VALUES_FILES])
def test_lint_clean(values_file):
    report = helm.lint(str(CHART), values_of(values_file), strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("values_file", [None, *VALUES_FILES])
def test_every_manifest_is_valid_kubernetes(values_file):
    docs = render(values_of(values_file))
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)  # raises ValidationError


@pytest.mark.parametrize("values_file", [None, *VALUES_FILES])
def test_pod_security_on_every_pod(values_file):
    specs = pod_specs(render(values_of(values_file)))
    assert specs
    for spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])  # writable scratch
            assert c["resources"]["requests"]


def test_default_controller_sqlite_on_a_volume_with_probes():
    docs = render({})
    (dep,) = by_kind(docs, "Deployment")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["edgecompress", "farm", "controller"]
    assert "--db-url=sqlite:////data/farm.db" in c["args"] and "--blob-dir=/data/blobs" in c["args"]
    assert "--host=0.0.0.0" in c["args"] and "--port=8080" in c["args"]
    assert c["image"] == "ghcr.io/edgecompress/components:0.1.0"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    env = {e["name"]: e for e in c["env"]}
    # The controller holds only the admin token; clients and agents are enrolled into the database.
    assert env["EDGECOMPRESS_FARM_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "edgecompress-farm-tokens",
        "key": "admin-token",
    }
    assert not {"EDGECOMPRESS_FARM_CLIENT_TOKEN", "EDGECOMPRESS_FARM_AGENT_TOKEN"} & set(env)
    assert "--retention-days=30" in c["args"] and not any(a.startswith("--tls") for a in c["args"])
    (pvc,) = by_kind(docs, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    (svc,) = by_kind(docs, "Service")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert not by_kind(docs, "DaemonSet") and not by_kind(docs, "CronJob")


def test_postgres_url_from_a_secret_never_inline():
    docs = render(values_of("values-postgres.yaml"))
    (dep,) = by_kind(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2 and "strategy" not in dep["spec"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert "--db-url=$(EDGECOMPRESS_FARM_DB_URL)" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    assert env["EDGECOMPRESS_FARM_DB_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "edgecompress-farm-db",
        "key": "url",
    }
    text = yaml.safe_dump_all(docs)
    assert "postgresql+psycopg://" not in text and "PASSWORD" not in text
    assert not by_kind(docs, "Secret")  # the chart never carries credentials


def test_one_agent_daemonset_per_device_class():
    docs = render(values_of("values-devices.yaml"))
    agents = {d["metadata"]["labels"]["edgecompress.io/device-class"]: d for d in by_kind(docs, "DaemonSet")}
    assert set(agents) == {"rpi4", "jetson-orin-nano"}
    rpi = agents["rpi4"]["spec"]["template"]["spec"]
    assert rpi["nodeSelector"] == {"edgecompress.io/device-class": "rpi4"}
    assert rpi["tolerations"] == [
        {"key": "edgecompress.io/device", "operator": "Equal", "value": "rpi4", "effect": "NoSchedule"}
    ]
    (c,) = rpi["containers"]
    assert c["command"] == ["edgecompress", "farm", "agent"]
    assert c["args"][:2] == [
        "--controller=http://ec-edgecompress-controller.farm.svc:8080",
        "--device-class=rpi4",
    ]
    assert c["image"] == "ghcr.io/edgecompress/agent-arm64:0.1.0"
    assert c["resources"]["limits"] == {"memory": "1Gi"}
    jetson = agents["jetson-orin-nano"]["spec"]["template"]["spec"]
    assert jetson["nodeSelector"]["kubernetes.io/arch"] == "arm64"
    assert (
        "--providers=TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider"
        in jetson["containers"][0]["args"]
    )
    assert "--agent-id=$(NODE_NAME)-rpi4" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    # each agent pod enrols itself with its class's enrolment token and gets its own token
    assert env["EDGECOMPRESS_FARM_ENROLMENT_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "edgecompress-farm-enrolment",
        "key": "enrolment-token-rpi4",
    }
    assert "EDGECOMPRESS_FARM_AGENT_TOKEN" not in env and env["NODE_NAME"]["valueFrom"]


def test_tls_certificate_mounted_probes_https_and_agents_verify_with_the_ca():
    values = values_of("values-devices.yaml")
    values["controller"] = {**values_of("values-postgres.yaml")["controller"]}
    values["agents"]["caBundle"] = {"configMap": "edgecompress-farm-ca", "key": "ca.crt"}
    docs = render(values)
    (dep,) = by_kind(docs, "Deployment")
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert (
        "--tls-cert=/etc/edgecompress/tls/tls.crt" in c["args"]
        and "--tls-key=/etc/edgecompress/tls/tls.key" in c["args"]
    )
    assert {"name": "tls", "mountPath": "/etc/edgecompress/tls", "readOnly": True} in c["volumeMounts"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "edgecompress-farm-tls"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http", "scheme": "HTTPS"}
    for ds in by_kind(docs, "DaemonSet"):
        (a,) = ds["spec"]["template"]["spec"]["containers"]
        assert a["args"][0] == "--controller=https://ec-edgecompress-controller.farm.svc:8080"
        assert "--ca-bundle=/etc/edgecompress/ca/ca.crt" in a["args"]
        ca = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}["ca"]
        assert ca == {"name": "ca", "configMap": {"name": "edgecompress-farm-ca"}}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_enrolment_token_key_per_class_can_be_set():
    values = values_of("values-devices.yaml")
    values["agents"]["deviceClasses"][0]["enrolmentTokenKey"] = "pi-fleet"
    values["agents"]["enrolment"] = {"existingSecret": "fleet-secrets"}
    agents = {
        d["metadata"]["labels"]["edgecompress.io/device-class"]: d
        for d in by_kind(render(values), "DaemonSet")
    }
    env = {e["name"]: e for e in agents["rpi4"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["EDGECOMPRESS_FARM_ENROLMENT_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "fleet-secrets",
        "key": "pi-fleet",
    }


def test_drift_cronjob_command_is_configurable():
    values = values_of("values-devices.yaml")
    values["driftCheck"]["command"] = ["edgecompress", "drift", "watch"]
    (cron,) = by_kind(render(values), "CronJob")
    assert cron["spec"]["schedule"] == "0 3 * * *" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    (c,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["edgecompress", "drift", "watch"]
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_TRACKING_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "edgecompress-mlflow",
        "key": "tracking-uri",
    }


@pytest.mark.parametrize("values_file", [None, *VALUES_FILES])
def test_rbac_is_least_privilege(values_file):
    docs = render(values_of(values_file))
    (role,) = by_kind(docs, "Role")
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    for rule in role["rules"]:
        assert rule["verbs"] == ["get"] and rule["resources"] == ["secrets"]
        assert rule["resourceNames"] and "*" not in rule["resourceNames"]
    (binding,) = by_kind(docs, "RoleBinding")
    (sa,) = by_kind(docs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "farm"}
    ]
    assert sa["automountServiceAccountToken"] is False


def test_network_policy_admits_only_agents_and_farm_clients():
    docs = render(values_of("values-postgres.yaml"))
    policies = {p["metadata"]["name"]: p for p in by_kind(docs, "NetworkPolicy")}
    ctrl = policies["ec-edgecompress-controller"]["spec"]
    peers = ctrl["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"edgecompress.io/farm-client": "true"}}} in peers
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeflow"}}} in peers
    assert ctrl["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert policies["ec-edgecompress-no-ingress"]["spec"]["ingress"] == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"controller": {"database": {"type": "mysql"}}},
            "at '/controller/database/type': value must be one of 'sqlite', 'postgresql'",
        ),
        ({"controller": {"database": {"type": "postgresql"}}}, "/controller/database"),
        ({"controller": {"replicas": 0}}, "at '/controller/replicas'"),
        ({"agents": {"deviceClasses": [{"nodeSelector": {}}]}}, "missing property 'name'"),
        ({"agents": {"deviceClasses": [{"name": "Pi 4"}]}}, "at '/agents/deviceClasses/0/name'"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "at '/podSecurityContext/runAsNonRoot'"),
        (
            {"securityContext": {"allowPrivilegeEscalation": True}},
            "at '/securityContext/allowPrivilegeEscalation'",
        ),
        ({"driftCheck": {"schedule": "nightly"}}, "at '/driftCheck/schedule'"),
        ({"controler": {}}, "additional properties 'controler' not allowed"),
        ({"controller": {"tokens": {"existingSecret": ""}}}, "at '/controller/tokens/existingSecret'"),
        (
            {"controller": {"tokens": {"clientTokenKey": "x"}}},
            "additional properties 'clientTokenKey' not allowed",
        ),
        ({"controller": {"tls": {"existingSecret": "Not A Name"}}}, "at '/controller/tls/existingSecret'"),
        ({"controller": {"retentionDays": -1}}, "at '/controller/retentionDays'"),
        ({"agents": {"enrolment": {"existingSecret": ""}}}, "at '/agents/enrolment/existingSecret'"),
        (
            {"agents": {"deviceClasses": [{"name": "rpi4", "enrolmentTokenKey": "a b"}]}},
            "at '/agents/deviceClasses/0/enrolmentTokenKey'",
        ),
    ],
)
def test_invalid_values_rejected_by_schema(values, message):
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError) as err:
        chart.validate_schema(values)
    assert message in str(err.value), str(err.value)
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError):
        chart.render(values, name="ec", namespace="farm")  # rendering applies the schema too


def test_sqlite_with_replicas_fails_with_a_clear_message():
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError) as err:
        chart.render({"controller": {"replicas": 2}}, name="ec", namespace="farm")
    assert "controller.replicas > 1 needs controller.database.type=postgresql" in str(err.value)


def drift_command(values: dict) -> list[str]:
    (cron,) = by_kind(render(values), "CronJob")
    (c,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return [*c["command"], *c.get("args", [])]


def test_documented_drift_cronjob_runs_a_command_that_exists():
    """The nightly drift check of values-devices.yaml parses as a real `edgecompress` command (on
    d9a55b6: `drift check --reference … --current …`, exit 2); tests/containers runs it in the image."""
    from edgecompress.cli import build_parser
    from edgecompress.cli.lineage import cmd_drift

    command = drift_command(values_of("values-devices.yaml"))
    assert command[0] == "edgecompress"
    args = build_parser().parse_args(command[1:])
    assert args.func is cmd_drift
    assert args.batch.startswith("s3://") and args.model.startswith("models:/")  # kept as written
    assert str(args.output_dir).startswith("/tmp/")  # the root filesystem is read-only


def documented_secrets() -> set[tuple[str, str]]:
    """(namespace, Secret) pairs docs/kubernetes.md tells the user to create."""
    import re

    text = (CHART.parents[1] / "docs" / "kubernetes.md").read_text()
    return set(re.findall(r"kubectl -n (\S+) create secret (?:generic|tls) (\S+)", text))


@pytest.mark.parametrize("values_file", [None, *VALUES_FILES])
def test_every_secret_the_chart_reads_is_created_in_its_namespace_by_the_docs(values_file):
    """A Pod reads Secrets of its own namespace only: each Secret the chart's pods reference must be
    one docs/kubernetes.md creates in the release's namespace (`helm install … -n edgecompress`)."""
    values = values_of(values_file)
    if values_file is None:  # the default's optional drift job, enabled with its documented Secrets
        values = {"driftCheck": {**values_of("values-devices.yaml")["driftCheck"]}}
    docs, documented = render(values, namespace="edgecompress"), documented_secrets()
    refs = set()
    for spec in pod_specs(docs):
        for c in spec["containers"]:
            refs |= {
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in c.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
        refs |= {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    assert refs, values_file
    missing = sorted(r for r in refs if ("edgecompress", r) not in documented)
    assert not missing, (
        f"{values_file}: Secrets read in namespace edgecompress but created elsewhere: {missing}"
    )


def test_network_policy_admits_farm_clients_of_the_kfp_namespaces():
    docs = render({})
    (ctrl,) = [p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("-controller")]
    peers = ctrl["spec"]["ingress"][0]["from"]
    assert {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["kubeflow"]}
            ]
        },
        "podSelector": {"matchLabels": {"edgecompress.io/farm-client": "true"}},
    } in peers  # one peer: both selectors must match (pipeline pods of KFP's namespace)
    profiles = {"matchLabels": {"app.kubernetes.io/part-of": "kubeflow-profile"}}
    docs = render({"networkPolicy": {"clientNamespaceSelector": profiles}})
    (ctrl,) = [p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("-controller")]
    assert {
        "namespaceSelector": profiles,
        "podSelector": {"matchLabels": {"edgecompress.io/farm-client": "true"}},
    } in (ctrl["spec"]["ingress"][0]["from"])
    docs = render({"networkPolicy": {"clientNamespaces": []}})
    (ctrl,) = [p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("-controller")]
    assert not any("namespaceSelector" in peer for peer in ctrl["spec"]["ingress"][0]["from"])


def test_agent_daemonsets_have_probes():
    for ds in by_kind(render(values_of("values-devices.yaml")), "DaemonSet"):
        (c,) = ds["spec"]["template"]["spec"]["containers"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = c[probe]["exec"]["command"]
            assert command[:2] == ["python3", "-c"] and "/healthz" in command[2], (
                ds["metadata"]["name"],
                probe,
            )
            assert "ec-edgecompress-controller.farm.svc" in command[2]


def test_two_replica_controller_gets_a_pod_disruption_budget():
    (pdb,) = by_kind(render(values_of("values-postgres.yaml")), "PodDisruptionBudget")
    (deploy,) = by_kind(render(values_of("values-postgres.yaml")), "Deployment")
    assert deploy["spec"]["replicas"] == 2 and pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    assert not by_kind(render({}), "PodDisruptionBudget")  # one replica: a PDB would block every drain
