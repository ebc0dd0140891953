"""Offline checks of the Helm chart: lint it, render it for a value set (through Helm's own Go SDK,
``helm-python-sdk``: no binary, no cluster), validate every object against the Kubernetes schemas
(core kinds) or the CRD models (KEDA, Prometheus Operator), and check what no schema does:
selectors that match their pods, GPUs on the engines, resources, probes and a hardened security
context on every other container, disruption budgets for replicated Deployments, pods scraped once,
Secrets that the README documents, and metric names that really exist. Every problem names the
template and the field."""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from launch.catalogue import find
from launch.profiles import Profile, vllm_command

OLDEST_KUBERNETES = "1.29.0"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}
METRIC = re.compile(r"\b((?:gateway_|video_|vllm:)[a-zA-Z0-9_:]+)")
ENGINE_MODULE = "vllm.entrypoints.openai.api_server"
RELEASE = "mmgateway"


@dataclass(frozen=True)
class Problem:
    file: str
    obj: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.obj}: {self.field}: {self.message}"


@dataclass(frozen=True)
class Rendered:
    """One object of a rendered chart and the template it came from."""

    template: str
    doc: dict[str, Any]


class ChartError(Exception):
    """The chart cannot be rendered with these values (a schema violation, a failing template)."""


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base`` as Helm merges value files: maps merge, other values replace, null deletes."""
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_values(files: Iterable[Path]) -> dict[str, Any]:
    """The values of ``-f`` files, later ones over earlier ones."""
    values: dict[str, Any] = {}
    for path in files:
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ChartError(f"{path}: a values file holds a mapping, not {type(data).__name__}")
        values = merge_values(values, data)
    return values


def render(chart: Path, values: dict[str, Any] | None = None, namespace: str = RELEASE) -> list[Rendered]:
    """The objects ``helm template`` renders for ``chart`` with ``values`` over its defaults."""
    from helm_python.chart import Chart

    try:
        loaded = Chart.load(chart)
    except Exception as exc:  # HelmChartLoadError: no chart there, or a malformed Chart.yaml
        raise ChartError(" ".join(str(exc).split())) from None
    try:
        manifests = loaded.render(values or None, name=RELEASE, namespace=namespace, is_install=True)
    except Exception as exc:  # HelmValuesError, HelmRenderError: the message names the value or template
        raise ChartError(" ".join(str(exc).split())) from None
    finally:
        loaded.close()
    rendered: list[Rendered] = []
    for key in sorted(manifests):
        if not key.endswith((".yaml", ".yml")):
            continue  # NOTES.txt
        template = key.split("/", 1)[1]  # "<chart name>/templates/x.yaml"
        rendered += [Rendered(template, doc) for doc in yaml.safe_load_all(manifests[key]) if doc]
    return rendered


def lint(chart: Path, values: dict[str, Any] | None = None) -> list[str]:
    """``helm lint --strict``'s warnings and errors (its info lines, such as a missing icon, are not problems)."""
    from helm_python.chart import lint as helm_lint

    report = helm_lint(chart, values or None, strict=True, kube_version=f"v{OLDEST_KUBERNETES}")
    return [
        f"{m.get('path')}: {' '.join(str(m.get('error')).split())}" for m in report["messages"] if m["severity"] >= 2
    ]


def profile_args(profile: Profile) -> dict[str, Any]:
    """A launch profile as the chart's ``vllm.profiles`` entry holds it: the model and the flags after
    ``--model``, ``--served-model-name``, ``--host`` and ``--port`` (which the chart sets), as ``--flag=value``."""
    argv = vllm_command(profile, find(profile.model).repo_id, "x", python="python3", offline=False).argv
    flags: list[str] = []
    for token in argv[3:]:
        if token.startswith("--") or not flags:
            flags.append(token)
        else:
            flags[-1] += f"={token}"
    fixed = ("--model=", "--served-model-name=", "--host=", "--port=")
    return {"model": find(profile.model).repo_id, "args": [f for f in flags if not f.startswith(fixed)]}


def _name(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def _crd_model(doc: dict[str, Any]) -> type[BaseModel] | None:
    kind, api = doc.get("kind"), str(doc.get("apiVersion", ""))
    if api.startswith("keda.sh/") and kind == "ScaledObject":
        from cloudcoil.models.keda.v1alpha1 import ScaledObject

        return ScaledObject
    if api.startswith("monitoring.coreos.com/"):
        from cloudcoil.models.prometheus_operator import v1

        model = getattr(v1, str(kind), None)
        return model if isinstance(model, type) and issubclass(model, BaseModel) else None
    return None


def _unknown_fields(model: type[BaseModel], data: Any, path: str) -> Iterable[tuple[str, str]]:
    """Keys the model does not define (the CRD models themselves accept anything extra)."""
    if not isinstance(data, dict):
        return
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    fields.update({name: f for name, f in model.model_fields.items()})
    hints = typing.get_type_hints(model)
    for key, value in data.items():
        name = next((n for n, f in model.model_fields.items() if key in (n, f.alias)), None)
        if name is None:
            yield f"{path}.{key}".lstrip("."), "unknown field"
            continue
        for inner in _models_in(hints.get(name)):
            items = value if isinstance(value, list) else [value]
            for index, item in enumerate(items):
                suffix = f"[{index}]" if isinstance(value, list) else ""
                yield from _unknown_fields(inner, item, f"{path}.{key}{suffix}")


def _models_in(hint: Any) -> list[type[BaseModel]]:
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return [hint]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(hint):
        found += _models_in(arg)
    return found


def validate_schema(doc: dict[str, Any], version: str = OLDEST_KUBERNETES) -> list[tuple[str, str]]:
    """(field, message) for every schema violation of one object."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError

    model = _crd_model(doc)
    if model is not None:
        problems = list(_unknown_fields(model, doc, ""))
        try:
            model.model_validate(doc)
        except ValidationError as exc:
            problems += [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        return problems
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [(".".join(str(p) for p in exc.path) or "(object)", exc.message)]
    except SchemaNotFoundError:
        return [("apiVersion", f"no schema for {doc.get('apiVersion')} {doc.get('kind')} in Kubernetes {version}")]
    return []


def _matches(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in (selector or {}).items())


def _overlaps(a: dict[str, str] | None, b: dict[str, str] | None) -> bool:
    """Whether two Service selectors pick the same pods (one is contained in the other)."""
    return bool(a) and bool(b) and (_matches(a, b or {}) or _matches(b, a or {}))


def _pod_templates(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, str]]]:
    return [
        (d, d["spec"]["template"].get("metadata", {}).get("labels", {}))
        for d in docs
        if d.get("kind") in WORKLOADS and d.get("spec", {}).get("template")
    ]


def check_selectors(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str, str]]:
    """(object, field, message) where a selector or reference matches nothing."""
    problems: list[tuple[dict[str, Any], str, str]] = []
    templates = _pod_templates(docs)
    pod_labels = [labels for _, labels in templates]
    names = {(d.get("kind"), d["metadata"]["name"]) for d in docs}
    for workload, labels in templates:
        selector = workload["spec"].get("selector", {}).get("matchLabels")
        if not _matches(selector, labels):
            problems.append(
                (workload, "spec.selector.matchLabels", f"{selector} does not match the pod labels {labels}")
            )
    for doc in docs:
        kind, spec = doc.get("kind"), doc.get("spec") or {}
        if kind == "Service" and not any(_matches(spec.get("selector"), labels) for labels in pod_labels):
            problems.append((doc, "spec.selector", f"{spec.get('selector')} selects no pod template"))
        if kind in ("PodDisruptionBudget", "NetworkPolicy"):
            field = "spec.selector.matchLabels" if kind == "PodDisruptionBudget" else "spec.podSelector.matchLabels"
            selector = (spec.get("selector") or spec.get("podSelector") or {}).get("matchLabels")
            if not any(_matches(selector, labels) for labels in pod_labels):
                problems.append((doc, field, f"{selector} selects no pod template"))
        if kind == "Ingress":
            problems += _ingress_backends(doc, docs)
        if kind in ("HorizontalPodAutoscaler", "ScaledObject"):
            target = spec.get("scaleTargetRef", {})
            if ((target.get("kind") or "Deployment"), target.get("name")) not in names:
                problems.append((doc, "spec.scaleTargetRef", f"no Deployment named {target.get('name')}"))
    return problems


def _ingress_backends(ingress: dict[str, Any], docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str, str]]:
    """An Ingress's backends name a Service and one of its ports."""
    services = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Service"}
    problems: list[tuple[dict[str, Any], str, str]] = []
    for r, rule in enumerate(ingress["spec"].get("rules", [])):
        for p, path in enumerate((rule.get("http") or {}).get("paths", [])):
            backend = (path.get("backend") or {}).get("service") or {}
            field = f"spec.rules[{r}].http.paths[{p}].backend.service"
            service = services.get(backend.get("name", ""))
            if service is None:
                problems.append((ingress, field, f"no Service named {backend.get('name')}"))
                continue
            port = backend.get("port") or {}
            ports = service["spec"].get("ports", [])
            if not any(port.get("number") == q.get("port") or port.get("name") == q.get("name") for q in ports):
                problems.append((ingress, f"{field}.port", f"Service {service['metadata']['name']} has no port {port}"))
    return problems


def check_monitors(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str, str]]:
    """Service and pod monitors that select something, on a port it has, and scrape each pod once."""
    problems: list[tuple[dict[str, Any], str, str]] = []
    services = [d for d in docs if d.get("kind") == "Service"]
    templates = _pod_templates(docs)
    for doc in docs:
        kind, spec = doc.get("kind"), doc.get("spec") or {}
        selector = spec.get("selector", {}).get("matchLabels")
        if kind == "ServiceMonitor":
            targets = [s for s in services if _matches(selector, s["metadata"].get("labels", {}))]
            ports = {p.get("name") for s in targets for p in s["spec"].get("ports", [])}
            endpoints, field, what = spec.get("endpoints", []), "spec.endpoints", "Service"
            twice = sorted(
                s["metadata"]["name"]
                for s in targets
                if any(t is not s and _overlaps(s["spec"].get("selector"), t["spec"].get("selector")) for t in targets)
            )
            if twice:
                message = f"selects Services of the same pods ({', '.join(twice)}): each pod is scraped twice"
                problems.append((doc, "spec.selector.matchLabels", message))
        elif kind == "PodMonitor":
            pods = [w for w, labels in templates if _matches(selector, labels)]
            targets = pods
            containers = [c for w in pods for c in w["spec"]["template"]["spec"].get("containers", [])]
            ports = {p.get("name") for c in containers for p in c.get("ports", [])}
            endpoints, field, what = spec.get("podMetricsEndpoints", []), "spec.podMetricsEndpoints", "pod template"
        else:
            continue
        if not targets:
            problems.append((doc, "spec.selector.matchLabels", f"{selector} selects no {what}"))
            continue
        for index, endpoint in enumerate(endpoints):
            if endpoint.get("port") not in ports:
                problems.append((doc, f"{field}[{index}].port", f"no port named {endpoint.get('port')}"))
    return problems


def check_containers(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str, str]]:
    """Resources, probes and a hardened security context on every container."""
    problems: list[tuple[dict[str, Any], str, str]] = []
    for workload, _ in _pod_templates(docs):
        pod = workload["spec"]["template"]["spec"]
        pod_security = pod.get("securityContext") or {}
        for index, container in enumerate(pod.get("containers", [])):
            where = f"spec.template.spec.containers[{index}]"
            resources = container.get("resources") or {}
            for part in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(part) or {}):
                        problems.append((workload, f"{where}.resources.{part}.{resource}", "missing"))
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in container:
                    problems.append((workload, f"{where}.{probe}", "missing"))
            security = container.get("securityContext") or {}
            if security.get("allowPrivilegeEscalation") is not False:
                problems.append((workload, f"{where}.securityContext.allowPrivilegeEscalation", "must be false"))
            if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
                problems.append((workload, f"{where}.securityContext.capabilities.drop", "must drop ALL"))
            seccomp = (security.get("seccompProfile") or pod_security.get("seccompProfile") or {}).get("type")
            if seccomp != "RuntimeDefault":
                problems.append((workload, f"{where}.securityContext.seccompProfile", "must be RuntimeDefault"))
            # Engines (vLLM servers) need a GPU, run as root and write caches; every other container is locked down.
            if ENGINE_MODULE in (container.get("command") or []):
                if "nvidia.com/gpu" not in (resources.get("limits") or {}):
                    problems.append((workload, f"{where}.resources.limits", "an engine container needs nvidia.com/gpu"))
                continue
            if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
                problems.append((workload, f"{where}.securityContext.runAsNonRoot", "must be true"))
            if security.get("readOnlyRootFilesystem") is not True:
                problems.append((workload, f"{where}.securityContext.readOnlyRootFilesystem", "must be true"))
    return problems


def secret_references(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str, str, str]]:
    """(object, field, secret name, key) of every secretKeyRef."""
    found: list[tuple[dict[str, Any], str, str, str]] = []
    for workload, _ in _pod_templates(docs):
        for index, container in enumerate(workload["spec"]["template"]["spec"].get("containers", [])):
            for env_index, env in enumerate(container.get("env", [])):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    field = f"spec.template.spec.containers[{index}].env[{env_index}]"
                    found.append((workload, field, ref["name"], ref["key"]))
    return found


def metric_names_used(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str, str]]:
    """(object, field, metric) for every metric named in alert rules and dashboards."""
    used: list[tuple[dict[str, Any], str, str]] = []
    for doc in docs:
        if doc.get("kind") == "PrometheusRule":
            for g, group in enumerate(doc["spec"]["groups"]):
                for r, rule in enumerate(group["rules"]):
                    for name in METRIC.findall(rule.get("expr", "")):
                        used.append((doc, f"spec.groups[{g}].rules[{r}].expr", name))
        if doc.get("kind") == "ConfigMap" and (doc["metadata"].get("labels") or {}).get("grafana_dashboard"):
            for key, text in (doc.get("data") or {}).items():
                for p, panel in enumerate(json.loads(text).get("panels", [])):
                    for t, target in enumerate(panel.get("targets", [])):
                        for name in METRIC.findall(target.get("expr", "")):
                            used.append((doc, f"data.{key}.panels[{p}].targets[{t}].expr", name))
    return used


def _count(value: Any) -> int:
    """A replica count, or 0 where it is not a number (the schema check reports that)."""
    return value if isinstance(value, int) else 0


def check_disruption_budgets(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str, str]]:
    """A PodDisruptionBudget for every Deployment that runs (or may be scaled to) two or more pods."""
    problems: list[tuple[dict[str, Any], str, str]] = []
    scaled: dict[str, int] = {}
    for doc in docs:
        spec = doc.get("spec") or {}
        if doc.get("kind") in ("HorizontalPodAutoscaler", "ScaledObject"):
            least = spec.get("minReplicas", spec.get("minReplicaCount", 1))
            most = spec.get("maxReplicas", spec.get("maxReplicaCount", least))
            scaled[spec.get("scaleTargetRef", {}).get("name", "")] = max(_count(least), _count(most))
    budgets = [d["spec"].get("selector", {}).get("matchLabels") for d in docs if d.get("kind") == "PodDisruptionBudget"]
    for workload, labels in _pod_templates(docs):
        most = scaled.get(workload["metadata"]["name"], _count(workload["spec"].get("replicas", 1)))
        if most >= 2 and not any(_matches(selector, labels) for selector in budgets):
            problems.append(
                (workload, "spec.replicas", f"up to {most} replicas and no PodDisruptionBudget selects them")
            )
    return problems


def check_chart(
    chart: Path,
    values_files: list[Path],
    root: Path,
    documented_secrets: set[tuple[str, str]],
    known_metrics: set[str],
) -> list[Problem]:
    """Every problem of the chart rendered with ``values_files`` over its defaults."""
    where = str(
        chart.resolve().relative_to(root.resolve()) if chart.resolve().is_relative_to(root.resolve()) else chart
    )
    label = ", ".join(p.name for p in values_files) or "defaults"
    try:
        values = read_values(values_files)
    except (OSError, yaml.YAMLError, ChartError) as exc:
        return [Problem(where, label, "values", str(exc))]
    try:
        problems = [Problem(where, label, "helm lint", message) for message in lint(chart, values)]
    except Exception as exc:  # a chart Helm cannot load at all (Chart.yaml missing or malformed)
        return [Problem(where, label, "helm lint", " ".join(str(exc).split()))]
    try:
        rendered = render(chart, values)
    except ChartError as exc:
        return [*problems, Problem(where, label, "helm template", str(exc))]
    docs = [r.doc for r in rendered]
    origin = {id(r.doc): f"{where}/{r.template}" for r in rendered}

    def add(doc: dict[str, Any], field: str, message: str) -> None:
        problems.append(Problem(origin[id(doc)], _name(doc), field, message))

    for doc in docs:
        for field, message in validate_schema(doc):
            add(doc, field, message)
    checks = [check_selectors, check_monitors, check_containers, check_disruption_budgets]
    for doc, field, message in [found for check in checks for found in check(docs)]:
        add(doc, field, message)
    for doc, field, name, key in secret_references(docs):
        if (name, key) not in documented_secrets:
            add(doc, field, f"Secret {name} key {key} is not documented in the README")
    for doc, field, metric in metric_names_used(docs):
        if metric not in known_metrics:
            add(doc, field, f"metric {metric} is not exported by the gateway, the video service or vLLM")
    return problems


def value_sets(chart: Path) -> list[list[Path]]:
    """The chart's documented installs: its defaults, then each ``values-<name>.yaml`` beside ``Chart.yaml``."""
    return [[], *[[path] for path in sorted(chart.glob("values-*.yaml"))]]


def documented_secrets(readme: Path) -> set[tuple[str, str]]:
    """(secret, key) pairs from README table rows such as ``| `gateway-secrets` | `NEBIUS_API_KEY` | ... |``."""
    pairs = set()
    for match in re.finditer(
        r"^\s*\|\s*`([a-z0-9-]+)`\s*\|\s*`([A-Za-z0-9_.-]+)`\s*\|", readme.read_text(), re.MULTILINE
    ):
        pairs.add((match.group(1), match.group(2)))
    return pairs


def exposition_names(text: str) -> set[str]:
    """Metric names in a Prometheus text exposition."""
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
