"""Offline checks of the Kubernetes manifests: render each overlay with ``kubectl kustomize``,
validate every object against the Kubernetes schemas (core kinds) or the CRD models (KEDA,
Prometheus Operator), and check what no schema does: selectors that match their pods,
containers with resources, probes and a hardened security context, Secrets that the README
documents, and metric names that really exist. Every problem names the source file and field."""

from __future__ import annotations

import json
import re
import subprocess
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

ORIGIN = "config.kubernetes.io/origin"
OLDEST_KUBERNETES = "1.29.0"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}
METRIC = re.compile(r"\b((?:gateway_|video_|vllm:)[a-zA-Z0-9_:]+)")


@dataclass(frozen=True)
class Problem:
    file: str
    obj: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.obj}: {self.field}: {self.message}"


def render(overlay: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize`` renders for ``overlay`` (no cluster needed)."""
    try:
        result = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise RuntimeError("kubectl is not installed: it renders the kustomize overlays") from None
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay} failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def source_file(doc: dict[str, Any], overlay: Path, root: Path) -> str:
    """The file an object came from, from kustomize's origin annotation."""
    origin = ((doc.get("metadata") or {}).get("annotations") or {}).get(ORIGIN)
    if not origin:
        return str(overlay.relative_to(root))
    data = yaml.safe_load(origin) or {}
    relative = data.get("path") or data.get("configuredIn") or ""
    return str((overlay / relative).resolve().relative_to(root.resolve()))


def _name(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def _strip_origin(doc: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = json.loads(json.dumps(doc))
    annotations = clean.get("metadata", {}).get("annotations", {})
    annotations.pop(ORIGIN, None)
    if not annotations:
        clean.get("metadata", {}).pop("annotations", None)
    return clean


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
        kubernetes_validate.validate(_strip_origin(doc), version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [(".".join(str(p) for p in exc.path) or "(object)", exc.message)]
    except SchemaNotFoundError:
        return [("apiVersion", f"no schema for {doc.get('apiVersion')} {doc.get('kind')} in Kubernetes {version}")]
    return []


def _matches(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in (selector or {}).items())


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
    services = [d for d in docs if d.get("kind") == "Service"]
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
        if kind == "ServiceMonitor":
            selector = spec.get("selector", {}).get("matchLabels")
            targets = [s for s in services if _matches(selector, s["metadata"].get("labels", {}))]
            if not targets:
                problems.append((doc, "spec.selector.matchLabels", f"{selector} selects no Service"))
            ports = {p.get("name") for s in targets for p in s["spec"].get("ports", [])}
            for index, endpoint in enumerate(spec.get("endpoints", [])):
                if targets and endpoint.get("port") not in ports:
                    problems.append((doc, f"spec.endpoints[{index}].port", f"no port named {endpoint.get('port')}"))
        if kind in ("HorizontalPodAutoscaler", "ScaledObject"):
            target = spec.get("scaleTargetRef", {})
            if ((target.get("kind") or "Deployment"), target.get("name")) not in names:
                problems.append((doc, "spec.scaleTargetRef", f"no Deployment named {target.get('name')}"))
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
            # GPU containers (the vLLM image) run as root and write caches; every other one is locked down.
            if "nvidia.com/gpu" in (resources.get("limits") or {}):
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


def check_overlay(
    overlay: Path, root: Path, documented_secrets: set[tuple[str, str]], known_metrics: set[str]
) -> list[Problem]:
    """Every problem of one rendered overlay."""
    docs = render(overlay)
    problems: list[Problem] = []

    def add(doc: dict[str, Any], field: str, message: str) -> None:
        problems.append(Problem(source_file(doc, overlay, root), _name(doc), field, message))

    for doc in docs:
        for field, message in validate_schema(doc):
            add(doc, field, message)
    for doc, field, message in [*check_selectors(docs), *check_containers(docs)]:
        add(doc, field, message)
    for doc, field, name, key in secret_references(docs):
        if (name, key) not in documented_secrets:
            add(doc, field, f"Secret {name} key {key} is not documented in the README")
    for doc, field, metric in metric_names_used(docs):
        if metric not in known_metrics:
            add(doc, field, f"metric {metric} is not exported by the gateway, the video service or vLLM")
    return problems


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
