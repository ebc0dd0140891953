"""The Helm chart (linted, rendered for each documented value set and validated), the compose file
and the Dockerfiles, checked offline."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from launch.manifests import (
    ChartError,
    check_chart,
    documented_secrets,
    exposition_names,
    lint,
    profile_args,
    read_values,
    render,
    value_sets,
)
from tests.conftest import GatewayFactory, UpstreamFactory, deployment
from tests.video.conftest import ServiceFactory, Videos, video_service, videos

__all__ = ["video_service", "videos"]  # fixtures of the video tests, used here

pytestmark = pytest.mark.service

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "k8s" / "chart"
VALUE_SETS = {"defaults": [], "dev": [CHART / "values-dev.yaml"], "prod": [CHART / "values-prod.yaml"]}


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


def test_the_documented_value_sets_are_the_ones_checked() -> None:
    assert value_sets(CHART) == list(VALUE_SETS.values())


@pytest.mark.parametrize("value_set", VALUE_SETS)
async def test_chart_renders_valid_manifests(value_set: str, known_metrics: set[str]) -> None:
    secrets = documented_secrets(ROOT / "README.md")
    problems = check_chart(CHART, VALUE_SETS[value_set], ROOT, secrets, known_metrics)
    assert [str(p) for p in problems] == []


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_chart_lints_clean(value_set: str) -> None:
    assert lint(CHART, read_values(VALUE_SETS[value_set])) == []


def test_rare_gateway_counters_are_registered() -> None:
    from gateway.metrics import Metrics

    text = Metrics(list, float).render().decode()
    names = exposition_names(text)
    for name in ("gateway_retries", "gateway_fallbacks", "gateway_cooldowns", "gateway_rate_limited"):
        assert f"# TYPE {name}_total counter" in text
    assert "process_resident_memory_bytes" in names


def _objects(values: dict[str, Any] | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r.doc["kind"], r.doc["metadata"]["name"]): r.doc for r in render(CHART, values)}


def _value_set(name: str) -> dict[str, Any]:
    return read_values(VALUE_SETS[name])


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


T = "deploy/k8s/chart/templates/"


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "templates/gateway.yaml",
            "      terminationGracePeriodSeconds: 60",
            "      terminationGracePeriodSecond: 60",
            f"{T}gateway.yaml: Deployment/gateway: spec.template.spec:",
        ),
        (
            "templates/redis.yaml",
            "  replicas: 1",
            "  replicas: one",
            f"{T}redis.yaml: Deployment/redis: spec.replicas: 'one' is not of type 'integer'",
        ),
        (
            "templates/gateway.yaml",
            '"gateway") | nindent 4 }}\n  ports',
            '"gateway-x") | nindent 4 }}\n  ports',
            f"{T}gateway.yaml: Service/gateway: spec.selector: {{'app.kubernetes.io/name': 'gateway-x'",
        ),
        (
            "templates/video.yaml",
            "          livenessProbe:",
            "          livenessProbeX:",
            f"{T}video.yaml: Deployment/video: spec.template.spec.containers[0].livenessProbe: missing",
        ),
        (
            "templates/_helpers.tpl",
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: false",
            f"{T}gateway.yaml: Deployment/gateway: "
            "spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem: must be true",
        ),
        (
            "templates/vllm-autoscaling.yaml",
            "  pollingInterval: 15",
            "  pollingIntervl: 15",
            f"{T}vllm-autoscaling.yaml: ScaledObject/vllm: spec.pollingIntervl: unknown field",
        ),
        (
            "templates/monitoring.yaml",
            '      interval: {{ ternary "15s" "30s" (eq $name "gateway") }}',
            '      interval: {{ ternary "15" "30" (eq $name "gateway") }}',
            f"{T}monitoring.yaml: ServiceMonitor/gateway: spec.endpoints.0.interval:",
        ),
        (
            "files/alert-rules.yaml",
            "expr: sum(vllm:num_requests_waiting) > 20",
            "expr: sum(vllm:num_requests_queued) > 20",
            f"{T}monitoring.yaml: PrometheusRule/mmgateway: spec.groups[1].rules[1].expr: "
            "metric vllm:num_requests_queued is not exported",
        ),
        (
            "templates/vllm.yaml",
            "                  key: token",
            "                  key: HF_TOKEN",
            f"{T}vllm.yaml: Deployment/vllm: spec.template.spec.containers[0].env[1]: "
            "Secret hf-token key HF_TOKEN is not documented in the README",
        ),
        (
            "values-dev.yaml",
            "  profile: gpu-8gb",
            "  profile: gpu-8gb\n  resources:\n    requests: {cpu: '2', memory: 9Gi}\n"
            "    limits: {cpu: '4', memory: 9Gi}",
            f"{T}vllm.yaml: Deployment/vllm: spec.template.spec.containers[0].resources.limits: "
            "an engine container needs nvidia.com/gpu",
        ),
        (
            "templates/monitoring.yaml",
            '{{- $services := list "gateway" }}',
            '{{- $services := list "gateway" "vllm" }}',
            f"{T}monitoring.yaml: ServiceMonitor/vllm: spec.selector.matchLabels: selects Services of the same pods "
            "(vllm, vllm-headless): each pod is scraped twice",
        ),
        (
            "templates/monitoring.yaml",
            '(list "vllm" "http" "15s")',
            '(list "vllm" "metrics" "15s")',
            f"{T}monitoring.yaml: PodMonitor/vllm: spec.podMetricsEndpoints[0].port: no port named metrics",
        ),
        (
            "templates/gateway.yaml",
            "kind: PodDisruptionBudget",
            "kind: PodDisruptionBudgetX",
            f"{T}gateway.yaml: Deployment/gateway: spec.replicas: up to 3 replicas and no PodDisruptionBudget",
        ),
        (
            "templates/ingress.yaml",
            '"gateway" 4000 "video" 8080',
            '"gateway" 4001 "video" 8080',
            f"{T}ingress.yaml: Ingress/gateway: spec.rules[0].http.paths[0].backend.service.port: "
            "Service gateway has no port {'number': 4001}",
        ),
        (
            "values-dev.yaml",
            "gateway:\n  replicas: 1",
            "gateway:\n  replica: 1",
            "deploy/k8s/chart: values-dev.yaml: helm lint: values.yaml: - at '/gateway': additional properties "
            "'replica' not allowed",
        ),
        (
            "values-dev.yaml",
            "  profile: gpu-8gb",
            "  profile: gpu-8gib",
            "deploy/k8s/chart: values-dev.yaml: helm template: execution error at "
            '(mmgateway/templates/vllm.yaml:2:16): vllm.profile: "gpu-8gib" is not one of vllm.profiles '
            "(gpu-16gb, gpu-24gb, gpu-80gb, gpu-80gb-72b, gpu-8gb)",
        ),
    ],
)
def test_broken_charts_are_caught_with_template_and_field(
    broken_copy: Path, vllm_metrics: set[str], file: str, old: str, new: str, expected: str
) -> None:
    chart = broken_copy / "deploy" / "k8s" / "chart"
    _edit(chart / file, old, new)
    known = vllm_metrics | {"gateway_requests_total", "gateway_deployment_healthy"}
    known |= {"gateway_request_duration_seconds_bucket", "video_jobs_total", "gateway_spend_flush_failures_total"}
    secrets = documented_secrets(broken_copy / "README.md")
    problems = [
        str(p)
        for name in ("dev", "prod")
        for p in check_chart(chart, [chart / f"values-{name}.yaml"], broken_copy, secrets, known)
    ]
    assert any(p.startswith(expected) for p in problems), "\n".join(problems)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"gateway": {"replicass": 2}}, "at '/gateway': additional properties 'replicass' not allowed"),
        ({"gateway": {"workers": "many"}}, "at '/gateway/workers': 'anyOf' failed"),
        (
            {"vllm": {"extraArgs": ["max-model-len=4096"]}},
            "at '/vllm/extraArgs/0': 'max-model-len=4096' does not match",
        ),
        ({"video": {"engine": "temporl"}}, "at '/video/engine': value must be one of 'embedded', 'temporal'"),
        ({"monitoring": {"enabled": "yes"}}, "at '/monitoring/enabled': value must be one of 'auto', true, false"),
        ({"video": {"replicas": 3}}, "video.replicas: the embedded engine runs one replica"),
    ],
)
def test_a_bad_value_fails_naming_the_field(values: dict[str, Any], expected: str) -> None:
    with pytest.raises(ChartError) as caught:
        render(CHART, values)
    assert expected in str(caught.value)


def test_chart_profiles_are_launchs() -> None:
    """``vllm.profiles`` holds exactly launch's GPU profiles, flag for flag (``launch vllm --profile X --dry-run``)."""
    from launch.profiles import PROFILES

    profiles = yaml.safe_load((CHART / "values.yaml").read_text())["vllm"]["profiles"]
    gpu = {name: p for name, p in PROFILES.items() if not p.on_cpu}
    assert set(profiles) == set(gpu)
    for name, profile in gpu.items():
        expected = profile_args(profile)
        assert {"model": profiles[name]["model"], "args": profiles[name]["args"]} == expected, name
        assert profiles[name]["resources"]["limits"]["nvidia.com/gpu"] == "1"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rendered_gateway_config_is_one_the_gateway_serves(value_set: str) -> None:
    """The config the chart writes loads in the gateway; the video service's groups exist and its key may call them."""
    from gateway.config import parse_config

    docs = _objects(_value_set(value_set))
    raw = yaml.safe_load(docs[("ConfigMap", "gateway-config")]["data"]["config.yaml"])
    env = {name: f"{name.lower()}-0123456789" for name in ("NEBIUS_API_KEY", "GATEWAY_MASTER_KEY", "VIDEO_SERVICE_KEY")}
    config = parse_config(raw, env, source="gateway-config").config
    groups = {entry.model_name: entry for entry in config.model_list}
    assert groups["vision"].litellm_params.api_base == "http://vllm-headless:8000/v1"
    assert groups["vision"].model_info.per_pod
    assert "video/*" in groups
    assert raw["router_settings"]["redis_host"] == "redis"
    (video_key,) = [k for k in raw["gateway_settings"]["api_keys"] if k["name"] == "video-service"]
    for workload in ("video", "video-worker"):
        if ("Deployment", workload) not in docs:
            continue
        env_of = {
            e["name"]: e for e in docs[("Deployment", workload)]["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        for setting in ("VIDEO_VISION_MODEL", "VIDEO_CHAT_MODEL", "VIDEO_TRANSCRIPTION_MODEL"):
            if setting in env_of:
                model = env_of[setting]["value"]
                assert model in groups, (workload, setting)
                assert model in video_key["models"], (workload, setting)
    transcribing = ("Deployment", "whisper") in docs
    assert transcribing == (value_set == "prod")
    assert ("transcription" in groups) == transcribing
    if transcribing:
        assert groups["transcription"].litellm_params.api_base == "http://whisper-headless:8000/v1"


def test_the_chart_adds_only_what_the_config_lacks() -> None:
    own = {"model_list": [{"model_name": "vision", "litellm_params": {"model": "openai/gpt-4o", "api_key": "k"}}]}
    docs = _objects({"gateway": {"config": own}, "redis": {"host": "redis.shared.svc", "port": 6380}})
    raw = yaml.safe_load(docs[("ConfigMap", "gateway-config")]["data"]["config.yaml"])
    assert [e["model_name"] for e in raw["model_list"]] == ["video/*", "vision"]
    assert raw["model_list"][1]["litellm_params"]["model"] == "openai/gpt-4o"
    assert (raw["router_settings"]["redis_host"], raw["router_settings"]["redis_port"]) == ("redis.shared.svc", 6380)
    assert ("Deployment", "redis") not in docs, "an existing Redis: none runs here"
    without = _objects({"redis": {"enabled": False}})
    assert (
        "redis_host"
        not in yaml.safe_load(without[("ConfigMap", "gateway-config")]["data"]["config.yaml"])["router_settings"]
    )
    mine = _objects({"gateway": {"existingConfigMap": "my-gateway-config"}})
    assert ("ConfigMap", "gateway-config") not in mine
    volumes = mine[("Deployment", "gateway")]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": "my-gateway-config"}} in volumes


def test_a_config_change_rolls_the_gateways() -> None:
    def checksum(values: dict[str, Any] | None) -> str:
        return _objects(values)[("Deployment", "gateway")]["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"
        ]

    assert checksum(None) != checksum({"gateway": {"config": {"router_settings": {"num_retries": 5}}}})


def test_monitoring_objects_follow_the_cluster_unless_told() -> None:
    """``auto``: rendered where the cluster serves monitoring.coreos.com/v1; offline (no such API) they are not."""
    kinds = {kind for kind, _ in _objects()}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    docs = _objects({"monitoring": {"enabled": True}})
    assert {("ServiceMonitor", "gateway"), ("PodMonitor", "vllm"), ("PrometheusRule", "mmgateway")} <= set(docs)
    dashboard = docs[("ConfigMap", "mmgateway-grafana-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["mmgateway.json"]) == json.loads(
        (CHART / "files" / "grafana-dashboard.json").read_text()
    )


def test_parts_can_be_left_out() -> None:
    off = {"vllm": {"enabled": False}, "video": {"enabled": False}, "networkPolicy": {"enabled": False}}
    with pytest.raises(ChartError, match=r"chat falls back to \"vision\", which is no group of the gateway's config"):
        render(CHART, off)
    off["gateway"] = {"config": {"router_settings": {"fallbacks": None}}}
    docs = _objects(off)
    assert {name for kind, name in docs if kind == "Deployment"} == {"gateway", "redis"}
    assert not any(kind == "NetworkPolicy" for kind, _ in docs)


def _hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    return subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("name", ["gateway", "video"])
def test_dockerfiles_lint_clean_and_are_hardened(name: str) -> None:
    dockerfile = ROOT / "deploy" / "docker" / f"{name}.Dockerfile"
    result = _hadolint(dockerfile)
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


def test_compose_serves_launchs_gpu_24gb_profile() -> None:
    from launch.profiles import PROFILES

    command = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["vllm"]["command"]
    expected = profile_args(PROFILES["gpu-24gb"])
    assert command[0] == f"--model={expected['model']}"
    assert [a for a in command if not a.startswith(("--model=", "--served-model-name=", "--host=", "--port="))] == (
        expected["args"]
    )


def test_every_engine_image_is_the_vllm_release_launch_installs() -> None:
    (release,) = re.findall(r"^vllm==(\S+)$", (ROOT / "launch" / "requirements-vllm-gpu.txt").read_text(), re.MULTILINE)
    chart = yaml.safe_load((CHART / "values.yaml").read_text())["images"]
    assert chart["vllm"] == {"repository": "vllm/vllm-openai", "tag": f"v{release}"}
    assert yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["vllm"]["image"] == (
        f"vllm/vllm-openai:v{release}"
    )
    audio = ROOT / "deploy" / "docker" / "vllm-audio.Dockerfile"
    assert re.findall(r"^FROM (\S+)", audio.read_text(), re.MULTILINE) == [f"vllm/vllm-openai:v{release}"]
    assert chart["transcription"]["repository"] == "mmgateway/vllm-audio"
    result = _hadolint(audio)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_manifests_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from launch.cli import main

    assert main(["check-manifests"]) == 0
    assert capsys.readouterr().out.count(": ok") == len(VALUE_SETS)
    typo = tmp_path / "values-typo.yaml"
    typo.write_text("gateway:\n  replicass: 2\n")
    assert main(["check-manifests", str(typo)]) == 1
    captured = capsys.readouterr()
    assert "additional properties 'replicass' not allowed" in captured.err
    assert f"{typo}: " in captured.out
    assert main(["check-manifests", str(tmp_path / "missing.yaml")]) == 1
    assert "no such values file" in capsys.readouterr().err
    broken = tmp_path / "chart"
    broken.mkdir()
    (broken / "Chart.yaml").write_text("name: [\n")
    assert main(["check-manifests", "--chart", str(broken)]) == 1
    assert "helm template: cannot load Chart.yaml" in capsys.readouterr().err
    assert main(["check-manifests", "--chart", str(tmp_path)]) == 1
    assert "is not a Helm chart" in capsys.readouterr().err


def test_the_dev_install_needs_one_gpu() -> None:
    docs = _objects(_value_set("dev"))
    gpus = 0
    for (kind, name), doc in docs.items():
        if kind != "Deployment":
            continue
        scaler = docs.get(("ScaledObject", name)) or docs.get(("HorizontalPodAutoscaler", name))
        most = (scaler or {}).get("spec", {}).get("maxReplicaCount") or (scaler or {}).get("spec", {}).get(
            "maxReplicas"
        )
        replicas = most or doc["spec"].get("replicas", 1)
        for container in doc["spec"]["template"]["spec"]["containers"]:
            gpus += replicas * int(container["resources"].get("limits", {}).get("nvidia.com/gpu", 0))
    assert gpus == 1


def test_prod_runs_video_jobs_on_temporal_workers() -> None:
    docs = _objects(_value_set("prod"))
    api = docs[("Deployment", "video")]["spec"]
    assert api["replicas"] >= 2
    assert api["strategy"]["type"] == "RollingUpdate"
    assert docs[("PersistentVolumeClaim", "video-data")]["spec"]["accessModes"] == ["ReadWriteMany"]
    worker = docs[("Deployment", "video-worker")]["spec"]["template"]["spec"]["containers"][0]
    assert worker["command"] == ["video", "worker"]
    trigger = docs[("ScaledObject", "video-worker")]["spec"]["triggers"][0]
    assert (trigger["type"], trigger["metadata"]["queueTypes"]) == ("temporal", "activity")
    config = docs[("ConfigMap", "video-temporal")]
    assert trigger["metadata"]["taskQueue"] == config["data"]["VIDEO_TEMPORAL_TASK_QUEUE"]
    assert {("PodDisruptionBudget", "video"), ("PodDisruptionBudget", "video-worker")} <= set(docs)
    api_env = {e["name"] for e in api["template"]["spec"]["containers"][0]["env"]}
    assert {"VIDEO_DATABASE_URL", "VIDEO_TEMPORAL_API_KEY"} <= api_env
    assert "replicas" not in docs[("Deployment", "vllm")]["spec"], "KEDA owns the count"
    gateway_env = {
        e["name"]: e for e in docs[("Deployment", "gateway")]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert gateway_env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["optional"] is False, "managed keys need PostgreSQL"
    dev = _objects(_value_set("dev"))
    assert ("Deployment", "video-worker") not in dev, "dev keeps the embedded engine"
    assert dev[("Deployment", "video")]["spec"]["strategy"]["type"] == "Recreate"
    assert dev[("PersistentVolumeClaim", "video-data")]["spec"]["accessModes"] == ["ReadWriteOnce"]
    kept = dev[("PersistentVolumeClaim", "video-data")]["metadata"]["annotations"]["helm.sh/resource-policy"]
    assert kept == "keep", "uninstalling keeps the uploaded videos"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_engine_pods_cannot_reach_the_cluster_or_the_metadata_endpoint(value_set: str) -> None:
    docs = _objects(_value_set(value_set))
    engines = [name for kind, name in docs if kind == "Deployment" and name in ("vllm", "whisper")]
    assert "vllm" in engines
    for engine in engines:
        policy = docs[("NetworkPolicy", f"{engine}-egress")]["spec"]
        assert policy["policyTypes"] == ["Egress"]
        assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == engine
        blocks = [peer["ipBlock"] for rule in policy["egress"] for peer in rule["to"] if "ipBlock" in peer]
        assert blocks, "no internet egress rule"
        for block in blocks:
            assert {"169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} <= set(block.get("except", []))


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_vllm_admits_the_clips_the_video_service_sends(value_set: str) -> None:
    """A Qwen2.5-VL group takes video by default, so vLLM must admit a video item a prompt (with
    ``"video": 0`` it answers every clip with a 400)."""
    from launch.profiles import PROFILES

    docs = _objects(_value_set(value_set))
    args = docs[("Deployment", "vllm")]["spec"]["template"]["spec"]["containers"][0]["args"]
    (limits,) = [a.split("=", 1)[1] for a in args if a.startswith("--limit-mm-per-prompt=")]
    assert yaml.safe_load(limits)["video"] >= 1
    assert all(p.limit_mm_per_prompt.get("video", 0) >= 1 for p in PROFILES.values())


def test_every_value_has_a_schema_and_every_schema_field_a_default() -> None:
    """values.yaml and values.schema.json name the same fields (free-form maps aside), so a new value
    cannot slip past the schema and the schema keeps no field the chart no longer reads."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
        return node

    def fields(node: dict[str, Any], value: Any, path: str) -> list[str]:
        node = resolve(node)
        if node.get("additionalProperties") is not False or not isinstance(value, dict) or not value:
            return []  # a free-form map (labels, the gateway config), a leaf, or {} for "unset"
        declared = set(node.get("properties", {}))
        problems = [f"{path}.{k}: no schema" for k in sorted(set(value) - declared)]
        problems += [f"{path}.{k}: no default in values.yaml" for k in sorted(declared - set(value))]
        for key in sorted(declared & set(value)):
            problems += fields(node["properties"][key], value[key], f"{path}.{key}")
        return problems

    assert fields(schema, values, "") == []
