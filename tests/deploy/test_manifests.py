"""Kubernetes overlays, compose file and Dockerfiles, checked offline."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from launch.manifests import check_overlay, documented_secrets, exposition_names
from tests.conftest import GatewayFactory, UpstreamFactory, deployment
from tests.video.conftest import ServiceFactory, Videos, video_service, videos

__all__ = ["video_service", "videos"]  # fixtures of the video tests, used here

pytestmark = pytest.mark.service

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ["dev", "prod"]


@pytest.fixture(scope="module")
def vllm_metrics() -> set[str]:
    return set((ROOT / "deploy" / "monitoring" / "vllm-metrics.txt").read_text().split())


@pytest.fixture
async def known_metrics(
    upstream: UpstreamFactory,
    gateway: GatewayFactory,
    video_service: ServiceFactory,
    videos: Videos,
    vllm_metrics: set[str],
) -> set[str]:
    """Names from a real gateway's and a real video service's /metrics after some traffic, and vLLM's."""
    fake = await upstream("vllm")
    vision = deployment("vision", fake)
    vision["model_info"]["input_cost_per_token"] = 1e-6  # priced: its spend is counted
    gw = await gateway(
        {
            "model_list": [vision, deployment("backup", fake)],
            "router_settings": {"fallbacks": [{"vision": ["backup"]}]},
        }
    )
    client = gw.openai()
    await client.chat.completions.create(model="vision", messages=[{"role": "user", "content": "hi"}])
    stream = await client.chat.completions.create(
        model="vision",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    async for _ in stream:
        pass
    gateway_names = exposition_names((await gw.http.get("/metrics")).text)
    # Counters of rare events (retries, fallbacks...) appear once they happened; another test
    # checks that they are registered.
    rare = {"gateway_retries_total", "gateway_fallbacks_total", "gateway_cooldowns_total", "gateway_rate_limited_total"}
    service = await video_service(gateway_url=f"{gw.url}/v1")
    with videos.short_mp4.open("rb") as handle:
        upload = await service.http.post("/upload", files={"file": ("short.mp4", handle, "video/mp4")})
    session_id = upload.json()["session_id"]
    async with service.http.stream("GET", f"/sessions/{session_id}/events") as events:
        async for line in events.aiter_lines():
            if line.startswith("event: completed"):
                break
    video_names = exposition_names((await service.http.get("/metrics")).text)
    return gateway_names | rare | video_names | vllm_metrics


@pytest.mark.parametrize("overlay", OVERLAYS)
async def test_overlay_is_valid(overlay: str, known_metrics: set[str]) -> None:
    secrets = documented_secrets(ROOT / "README.md")
    problems = check_overlay(ROOT / "deploy" / "k8s" / "overlays" / overlay, ROOT, secrets, known_metrics)
    assert [str(p) for p in problems] == []


def test_rare_gateway_counters_are_registered() -> None:
    from gateway.metrics import Metrics

    text = Metrics(list, float).render().decode()
    names = exposition_names(text)
    for name in ("gateway_retries", "gateway_fallbacks", "gateway_cooldowns", "gateway_rate_limited"):
        assert f"# TYPE {name}_total counter" in text
    assert "process_resident_memory_bytes" in names


@pytest.fixture
def broken_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "deploy", copy / "deploy")
    shutil.copy(ROOT / "README.md", copy / "README.md")
    return copy


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "base/gateway.yaml",
            "      terminationGracePeriodSeconds: 60",
            "      terminationGracePeriodSecond: 60",
            "deploy/k8s/base/gateway.yaml: Deployment/gateway: spec.template.spec:",
        ),
        (
            "base/video.yaml",
            "  replicas: 1",
            "  replicas: one",
            "deploy/k8s/base/video.yaml: Deployment/video: spec.replicas: 'one' is not of type 'integer'",
        ),
        (
            "base/gateway.yaml",
            "  selector:\n    app.kubernetes.io/name: gateway\n  ports:",
            "  selector:\n    app.kubernetes.io/name: gateway-typo\n  ports:",
            "deploy/k8s/base/gateway.yaml: Service/gateway: spec.selector: {'app.kubernetes.io/name': 'gateway-typo'}",
        ),
        (
            "base/video.yaml",
            "          livenessProbe:",
            "          livenessProbeX:",
            "deploy/k8s/base/video.yaml: Deployment/video: spec.template.spec.containers[0].livenessProbe: missing",
        ),
        (
            "base/gateway.yaml",
            "            readOnlyRootFilesystem: true",
            "            readOnlyRootFilesystem: false",
            "deploy/k8s/base/gateway.yaml: Deployment/gateway: "
            "spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem: must be true",
        ),
        (
            "components/keda/scaledobject.yaml",
            "  pollingInterval: 15",
            "  pollingIntervl: 15",
            "deploy/k8s/components/keda/scaledobject.yaml: ScaledObject/vllm: spec.pollingIntervl: unknown field",
        ),
        (
            "base/monitoring.yaml",
            "      path: /metrics\n      interval: 30s",
            "      path: /metrics\n      interval: 30",
            "deploy/k8s/base/monitoring.yaml: ServiceMonitor/video: spec.endpoints.0.interval:",
        ),
        (
            "base/monitoring.yaml",
            "expr: sum(vllm:num_requests_waiting) > 20",
            "expr: sum(vllm:num_requests_queued) > 20",
            "deploy/k8s/base/monitoring.yaml: PrometheusRule/mmgateway: spec.groups[1].rules[1].expr: "
            "metric vllm:num_requests_queued is not exported",
        ),
        (
            "base/vllm.yaml",
            "                  name: hf-token\n                  key: token",
            "                  name: hf-token\n                  key: HF_TOKEN",
            "deploy/k8s/base/vllm.yaml: Deployment/vllm: spec.template.spec.containers[0].env[1]: "
            "Secret hf-token key HF_TOKEN is not documented in the README",
        ),
    ],
)
def test_broken_manifests_are_caught_with_file_and_field(
    broken_copy: Path, vllm_metrics: set[str], file: str, old: str, new: str, expected: str
) -> None:
    _edit(broken_copy / "deploy" / "k8s" / file, old, new)
    known = vllm_metrics | {"gateway_requests_total", "gateway_deployment_healthy"}
    known |= {"gateway_request_duration_seconds_bucket", "video_jobs_total"}
    problems = [
        str(p)
        for p in check_overlay(
            broken_copy / "deploy" / "k8s" / "overlays" / "dev",
            broken_copy,
            documented_secrets(broken_copy / "README.md"),
            known,
        )
    ]
    assert any(p.startswith(expected) for p in problems), "\n".join(problems)


@pytest.mark.parametrize("name", ["gateway", "video"])
def test_dockerfiles_lint_clean_and_are_hardened(name: str) -> None:
    dockerfile = ROOT / "deploy" / "docker" / f"{name}.Dockerfile"
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    text = dockerfile.read_text()
    final = text.split("\nFROM ")[-1]
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2, "multi-stage"
    assert re.search(r"^USER 10001", final, re.MULTILINE), "non-root user in the final stage"
    assert "HEALTHCHECK" in final
    assert not re.search(r"gcc|build-essential|apt-get install", final)
    assert f"deploy/docker/{name}.lock" in text, "pinned dependencies"


def test_compose_file_structure() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"vllm", "gateway", "video"}
    for name, service in services.items():
        image = service["image"]
        assert ":" in image, f"{name}: pinned image"
        assert not image.endswith(":latest"), f"{name}: pinned image"
        assert service["healthcheck"]["test"], name
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"KEY|TOKEN|SECRET|PASSWORD", key):
                assert str(value).startswith("${"), f"{name}: {key} must come from the environment, not inline"
    assert services["gateway"]["depends_on"]["vllm"]["condition"] == "service_healthy"
    assert services["video"]["depends_on"]["gateway"]["condition"] == "service_healthy"
    assert services["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_check_manifests_command(capsys: pytest.CaptureFixture[str]) -> None:
    from launch.cli import main

    overlays = [str(ROOT / "deploy" / "k8s" / "overlays" / name) for name in OVERLAYS]
    assert main(["check-manifests", *overlays]) == 0
    assert capsys.readouterr().out.count(": ok") == 2


def test_prod_runs_video_jobs_on_temporal_workers() -> None:
    from launch.manifests import render

    docs = {(d["kind"], d["metadata"]["name"]): d for d in render(ROOT / "deploy/k8s/overlays/prod")}
    api = docs[("Deployment", "video")]["spec"]
    assert api["replicas"] >= 2
    assert api["strategy"]["type"] == "RollingUpdate"
    assert docs[("PersistentVolumeClaim", "video-data")]["spec"]["accessModes"] == ["ReadWriteMany"]
    worker = docs[("Deployment", "video-worker")]["spec"]["template"]["spec"]["containers"][0]
    assert worker["command"] == ["video", "worker"]
    trigger = docs[("ScaledObject", "video-worker")]["spec"]["triggers"][0]
    assert (trigger["type"], trigger["metadata"]["queueTypes"]) == ("temporal", "activity")
    config = next(d for (kind, name), d in docs.items() if kind == "ConfigMap" and name.startswith("video-temporal"))
    assert trigger["metadata"]["taskQueue"] == config["data"]["VIDEO_TEMPORAL_TASK_QUEUE"]
    assert {("PodDisruptionBudget", "video"), ("PodDisruptionBudget", "video-worker")} <= set(docs)
    dev = {(d["kind"], d["metadata"]["name"]) for d in render(ROOT / "deploy/k8s/overlays/dev")}
    assert ("Deployment", "video-worker") not in dev, "dev keeps the embedded engine"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_vllm_pods_cannot_reach_the_cluster_or_the_metadata_endpoint(overlay: str) -> None:
    from launch.manifests import render

    docs = {(d["kind"], d["metadata"]["name"]): d for d in render(ROOT / f"deploy/k8s/overlays/{overlay}")}
    policy = docs[("NetworkPolicy", "vllm-egress")]["spec"]
    assert policy["policyTypes"] == ["Egress"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "vllm"}
    blocks = [peer["ipBlock"] for rule in policy["egress"] for peer in rule["to"] if "ipBlock" in peer]
    assert blocks, "no internet egress rule"
    for block in blocks:
        assert {"169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} <= set(block.get("except", []))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_vllm_admits_the_clips_the_video_service_sends(overlay: str) -> None:
    """A Qwen2.5-VL group takes video by default, so vLLM must admit a video item a prompt (with
    ``"video": 0`` it answers every clip with a 400)."""
    from launch.manifests import render
    from launch.profiles import PROFILES

    docs = {(d["kind"], d["metadata"]["name"]): d for d in render(ROOT / f"deploy/k8s/overlays/{overlay}")}
    args = docs[("Deployment", "vllm")]["spec"]["template"]["spec"]["containers"][0]["args"]
    (limits,) = [a.split("=", 1)[1] for a in args if a.startswith("--limit-mm-per-prompt=")]
    assert yaml.safe_load(limits)["video"] >= 1
    assert all(p.limit_mm_per_prompt.get("video", 0) >= 1 for p in PROFILES.values())
