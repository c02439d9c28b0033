"""deploy/k8s renders with `kubectl kustomize` (these machines have it) and what it renders fits
the image and the gateway: probes on the endpoints that open no database connection, the
autoscaler on a series the gateway emits, a disruption budget over the gateway pods, the audit
journal on a claim that survives a restart, mounted where the image writes it, the config as a
directory (so an edited ConfigMap reloads), a connection budget under PostgreSQL's limit, and
config files that load."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.api.load import IN_FLIGHT
from gateway.config.loader import load_config
from tests.support.dockerfile import final_stage

K8S = Path(__file__).resolve().parents[3] / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
POSTGRES_MAX_CONNECTIONS = 100  # PostgreSQL's default; docs/deploy.md "Connection budget"


def render(overlay: str) -> dict[tuple[str, str], dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl is needed to render deploy/k8s (installed by .ci/run)"
    out = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)],
                         capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}


@pytest.fixture(params=OVERLAYS, scope="module")
def rendered(request: pytest.FixtureRequest) -> dict[tuple[str, str], dict[str, Any]]:
    return render(request.param)


def gateway_pod(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = objects[("StatefulSet", "tollgate")]["spec"]["template"]["spec"]
    return spec


def test_there_is_a_production_overlay_and_a_dev_one() -> None:
    assert {"production", "dev"} <= set(OVERLAYS)


def test_probes_use_the_endpoints_that_open_no_database_connection(rendered: Any) -> None:
    (gateway,) = gateway_pod(rendered)["containers"]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["args"][0] == "serve"


def test_the_autoscaler_reads_the_gateways_own_saturation_series(rendered: Any) -> None:
    hpa = rendered[("HorizontalPodAutoscaler", "tollgate")]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet",
                                     "name": "tollgate"}  # fmt: skip
    pods = [m["pods"] for m in hpa["metrics"] if m["type"] == "Pods"]
    assert [p["metric"]["name"] for p in pods] == [IN_FLIGHT]
    rules = yaml.safe_load((K8S / "prometheus-adapter-rules.yaml").read_text())
    assert IN_FLIGHT in rules["rules"]["custom"][0]["seriesQuery"]
    assert hpa["minReplicas"] >= 2


def test_the_disruption_budget_covers_the_gateway_pods(rendered: Any) -> None:
    pdb = rendered[("PodDisruptionBudget", "tollgate")]["spec"]
    labels = rendered[("StatefulSet", "tollgate")]["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["maxUnavailable"] == 1


def test_the_journal_survives_a_restart_where_the_image_writes_it(rendered: Any) -> None:
    sts = rendered[("StatefulSet", "tollgate")]["spec"]
    image_env = final_stage()["ENV"]
    assert isinstance(image_env, dict)
    claims = {c["metadata"]["name"] for c in sts["volumeClaimTemplates"]}
    (gateway,) = sts["template"]["spec"]["containers"]
    mounts = {m["mountPath"]: m for m in gateway["volumeMounts"]}
    journal = mounts[image_env["TOLLGATE_AUDIT_DIR"]]
    assert journal["name"] in claims, "the audit journal must be on a claim, not emptyDir"
    assert sts["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    security = sts["template"]["spec"]["securityContext"]
    assert str(security["runAsUser"]) == final_stage()["USER"]


def test_the_config_is_a_mounted_directory_so_edits_reload(rendered: Any) -> None:
    pod = gateway_pod(rendered)
    (gateway,) = pod["containers"]
    config = str(Path(dict(_env(gateway))["TOLLGATE_CONFIG"]).parent)
    mount = next(m for m in gateway["volumeMounts"] if m["mountPath"] == config)
    assert "subPath" not in mount, "subPath mounts are never updated by the kubelet"
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert ("ConfigMap", volume["configMap"]["name"]) in rendered


def test_the_schema_is_the_jobs_and_pods_wait_for_it(rendered: Any) -> None:
    job = rendered[("Job", "tollgate-migrate")]["spec"]["template"]["spec"]
    assert job["containers"][0]["args"] == ["db", "upgrade"]
    (wait,) = gateway_pod(rendered)["initContainers"]
    assert "tollgate db status" in " ".join(wait["command"])


def test_the_connection_budget_fits_postgres(rendered: Any) -> None:
    config = yaml.safe_load(rendered[("ConfigMap", "tollgate-config")]["data"]["tollgate.yaml"])
    database = config["database"]
    hpa = rendered[("HorizontalPodAutoscaler", "tollgate")]["spec"]
    (gateway,) = gateway_pod(rendered)["containers"]
    workers = int(gateway["args"][gateway["args"].index("--workers") + 1])
    per_process = database["pool_size"] + database["max_overflow"] + 1  # + the audit worker
    assert hpa["maxReplicas"] * workers * per_process <= POSTGRES_MAX_CONNECTIONS


def test_the_mounted_config_loads_with_the_secrets_the_pods_get(
    rendered: Any, tmp_path: Path
) -> None:
    """The ConfigMap written out as the kubelet mounts it, loaded with the Secret's keys (the
    dev overlay generates them; production's are created by hand: placeholders)."""
    for name, text in rendered[("ConfigMap", "tollgate-config")]["data"].items():
        (tmp_path / name).write_text(text)
    secret = rendered.get(("Secret", "tollgate-secrets"))
    keys = ["TOLLGATE_SECRET", "TOLLGATE_DATABASE_URL", "TOLLGATE_REDIS_URL"]
    keys += ["TOLLGATE_REDIS_CLUSTER", "TOLLGATE_ADMIN_KEY", "TG_PLATFORM_KEY", "TG_SUPPORT_KEY"]
    if secret is not None:
        import base64

        env = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        assert set(keys) <= set(env)
    else:
        env = {k: "placeholder" for k in keys} | {
            "TOLLGATE_DATABASE_URL": "postgresql://tollgate@db/tollgate",
            "TOLLGATE_REDIS_URL": "redis://redis:6379/0",
            "TOLLGATE_REDIS_CLUSTER": "false",
        }
    loaded = load_config(tmp_path / "tollgate.yaml", env=env)
    assert len(loaded.files) >= 3, "the policy files beside it are loaded too"
    assert loaded.config.limits.store == "redis"


def _env(container: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["name"], e.get("value", "")) for e in container.get("env", [])]
