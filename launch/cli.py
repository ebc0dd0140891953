"""The ``launch`` command: run vLLM with a profile, manage models, run the whole stack."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from launch import stack as stack_module
from launch.catalogue import CATALOGUE, find
from launch.environment import PACKAGE_ROOT, LaunchError, model_source, vllm_python
from launch.gpu import detect_gpus
from launch.models import ModelError, download, verify
from launch.profiles import PROFILES, Profile, select_profile, vllm_command
from launch.up import UpOptions, plan_stack

ROOT = PACKAGE_ROOT
DEFAULT_MODELS_DIR = Path(os.environ.get("LAUNCH_MODELS_DIR", "models"))


def _profile(name: str | None) -> Profile:
    if name is None:
        return select_profile(detect_gpus())
    if name not in PROFILES:
        raise SystemExit(f"error: unknown profile '{name}'; choose from {', '.join(PROFILES)}")
    return PROFILES[name]


def cmd_vllm(args: argparse.Namespace) -> int:
    profile = _profile(args.profile)
    try:
        source = model_source(args.model or profile.model, args.models_dir)
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        python = vllm_python(args.vllm_python, os.environ)
    except LaunchError as exc:
        if not args.dry_run:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"# note: {exc}", file=sys.stderr)
        python = args.vllm_python or os.environ.get("LAUNCH_VLLM_PYTHON") or "python"
    gpus = [] if profile.on_cpu else detect_gpus()
    launch = vllm_command(
        profile,
        source.location,
        source.served_name,
        offline=source.on_disk,
        python=python,
        host=args.host,
        port=args.port,
        gpu_count=len(gpus),
        extra_args=args.extra,
    )
    if args.dry_run:
        print(f"# profile {profile.name}: {profile.notes or source.location}")
        print(launch.shell())
        return 0
    os.execvpe(launch.argv[0], launch.argv, {**os.environ, **launch.env})


def cmd_models(args: argparse.Namespace) -> int:
    if args.action == "list":
        print(f"{'name':<22}{'repo':<38}{'size':>8}  {'on disk'}")
        for spec in CATALOGUE.values():
            on_disk = "yes" if (args.models_dir / spec.name).is_dir() else "-"
            print(f"{spec.name:<22}{spec.repo_id or '(built locally)':<38}{spec.size_gb:>6.1f}GB  {on_disk}")
        return 0
    if not args.name:
        print(f"error: 'launch models {args.action}' needs a model name", file=sys.stderr)
        return 2
    try:
        spec = find(args.name)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.action == "download":
        try:
            path = download(spec, args.models_dir, token=os.environ.get("HF_TOKEN"))
        except ModelError as exc:
            print(f"error: cannot download {spec.name}: {exc}", file=sys.stderr)
            return 1
        print(f"{spec.name} downloaded to {path}")
        return 0
    problems = verify(args.models_dir / spec.name, check_hashes=not args.no_hash, progress=print)
    if problems:
        print(f"{spec.name}: {len(problems)} problem(s)", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{spec.name}: ok")
    return 0


def cmd_tiny_model(args: argparse.Namespace) -> int:
    try:
        python = vllm_python(args.vllm_python, os.environ)
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result = subprocess.run(
        [python, "-m", "launch.tiny_model", str(args.directory)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    return result.returncode


def cmd_up(args: argparse.Namespace) -> int:
    try:
        python = vllm_python(args.vllm_python, os.environ)
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    options = UpOptions(
        root=ROOT,
        models_dir=args.models_dir,
        vllm_python=python,
        profile=args.profile,
        tiny=args.tiny,
        host=args.host,
        vllm_port=args.vllm_port,
        gateway_port=args.gateway_port,
        video_port=args.video_port,
        with_video=not args.no_video,
        engine=args.engine,
        video_workers=args.video_workers,
    )
    if args.video_workers < 1:
        print("error: --video-workers must be at least 1", file=sys.stderr)
        return 1
    try:
        services = plan_stack(options, print)
    except (RuntimeError, LaunchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return stack_module.run_stack(services)


def cmd_check_manifests(args: argparse.Namespace) -> int:
    from launch.manifests import check_chart, documented_secrets, value_sets

    root = next((r for r in (Path.cwd(), ROOT) if (r / "deploy" / "monitoring" / "vllm-metrics.txt").is_file()), None)
    if root is None:
        print("error: check-manifests runs in a checkout of the project (no deploy/ folder here)", file=sys.stderr)
        return 1
    missing_tools = [
        m for m in ("helm_python", "kubernetes_validate", "cloudcoil") if importlib.util.find_spec(m) is None
    ]
    if missing_tools:
        print(f"error: check-manifests needs {', '.join(missing_tools)}: pip install 'mmgateway[dev]'", file=sys.stderr)
        return 1
    chart = (args.chart or root / "deploy" / "k8s" / "chart").resolve()
    if not (chart / "Chart.yaml").is_file():
        print(f"error: {chart} is not a Helm chart (no Chart.yaml)", file=sys.stderr)
        return 1
    missing = [str(path) for path in args.values if not path.is_file()]
    if missing:
        print(f"error: no such values file: {', '.join(missing)}", file=sys.stderr)
        return 1
    known = set((root / "deploy" / "monitoring" / "vllm-metrics.txt").read_text().split())
    known |= _own_metric_names()
    secrets = documented_secrets(root / "README.md")
    failed = False
    # One install per values file given (each over the chart's defaults), else every documented one.
    for files in [[path] for path in args.values] or value_sets(chart):
        problems = check_chart(chart, files, root, secrets, known)
        for problem in problems:
            print(problem, file=sys.stderr)
        label = ", ".join(str(path) for path in files) or "defaults"
        print(f"{label}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
        failed = failed or bool(problems)
    return 1 if failed else 0


def _own_metric_names() -> set[str]:
    """Every series name the gateway and the video service can export."""
    from prometheus_client.registry import CollectorRegistry

    from gateway.metrics import Metrics
    from video.metrics import VideoMetrics

    names: set[str] = set()
    registries: list[CollectorRegistry] = [Metrics(list, float).registry, VideoMetrics(lambda: 0).registry]
    suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"]}
    for registry in registries:
        for family in registry.collect():
            for suffix in suffixes.get(family.type, [""]):
                names.add(family.name + suffix)
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launch", description="Run Qwen2.5-VL under vLLM and the whole stack")
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument(
        "--vllm-python",
        help="Python of the vLLM environment (default: $LAUNCH_VLLM_PYTHON, this environment when it has vLLM, "
        "else a checkout's .venv-vllm)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    vllm = commands.add_parser("vllm", help="start a vLLM OpenAI server with a profile")
    vllm.add_argument("--profile", help=f"one of {', '.join(PROFILES)} (default: chosen by GPU memory)")
    vllm.add_argument("--model", help="model directory, catalogue name or hub id (default: the profile's)")
    vllm.add_argument("--host", default="127.0.0.1")
    vllm.add_argument("--port", type=int, default=8000)
    vllm.add_argument("--dry-run", action="store_true", help="print the exact command and exit")
    vllm.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more vLLM flags")
    vllm.set_defaults(handler=cmd_vllm)

    models = commands.add_parser("models", help="list, download or verify models")
    models.add_argument("action", choices=["list", "download", "verify"])
    models.add_argument("name", nargs="?")
    models.add_argument("--no-hash", action="store_true", help="verify: skip sha256 checks")
    models.set_defaults(handler=cmd_models)

    tiny = commands.add_parser("tiny-model", help="build a tiny random-weights Qwen2.5-VL without any hub")
    tiny.add_argument("directory", type=Path)
    tiny.set_defaults(handler=cmd_tiny_model)

    check = commands.add_parser("check-manifests", help="lint, render and validate the Helm chart offline")
    check.add_argument("values", nargs="*", type=Path, help="values files (default: the chart's documented sets)")
    check.add_argument("--chart", type=Path, help="the chart's folder (default: deploy/k8s/chart)")
    check.set_defaults(handler=cmd_check_manifests)

    up = commands.add_parser("up", help="start vLLM, the gateway and the video service together")
    up.add_argument("--profile")
    up.add_argument("--tiny", action="store_true", help="serve the tiny random model (meaningless answers)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--vllm-port", type=int, default=8000)
    up.add_argument("--gateway-port", type=int, default=4000)
    up.add_argument("--video-port", type=int, default=8080)
    up.add_argument("--no-video", action="store_true")
    up.add_argument(
        "--engine",
        choices=("local", "temporal"),
        default="local",
        help="where video jobs run: in the video service (default) or on Temporal workers (a dev server is started)",
    )
    up.add_argument("--video-workers", type=int, default=2, help="video worker processes with --engine temporal")
    up.set_defaults(handler=cmd_up)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``launch`` console script."""
    args = build_parser().parse_args(argv)
    if getattr(args, "extra", None) and args.extra[0] == "--":
        args.extra = args.extra[1:]
    code: int = args.handler(args)
    return code
