"""The ``gateway`` command: ``serve`` and ``check-config``."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.env import read_env
from gateway.config import ConfigError, LoadedConfig, check_secrets, load_config
from gateway.deployment import Deployment
from gateway.deployments import build_deployments
from gateway.endpoints import BY_NAME, ENDPOINTS
from gateway.keys.database import describe
from gateway.prices import PriceBook
from gateway.routing import default_strategy
from gateway.sdk import check_providers
from gateway.settings import Settings, keys_database_url


def endpoint_table(groups: Mapping[str, list[Deployment]]) -> list[str]:
    """How each group serves each endpoint: passed through (native), translated to chat
    completions (bridge), through the litellm SDK (sdk), or refused with a 400 (-)."""
    names = [endpoint.name for endpoint in ENDPOINTS]
    lines = ["endpoints (native: passed through; bridge: translated to chat; sdk: litellm SDK; -: refused)"]
    for name in names:
        cells = []
        for group, deployments in groups.items():
            ways = sorted({w for d in deployments if (w := d.serving(BY_NAME[name])) is not None})
            cells.append(f"{group}={'+'.join(ways) or '-'}")
        lines.append(f"  {name:<22} {'  '.join(cells)}")
    return lines


def routing_table(loaded: LoadedConfig, env: Mapping[str, str]) -> str:
    """A human-readable summary of groups, deployments, fallbacks and keys."""
    config = loaded.config
    groups = build_deployments(config, env)
    lines = [
        "model group          deployment                provider     upstream model                 vision video  path"
    ]
    for name, deployments in groups.items():
        for d in deployments:
            limits = []
            if d.max_parallel:
                limits.append(f"max_parallel={d.max_parallel}")
            if d.rpm:
                limits.append(f"rpm={int(d.rpm.capacity)}")
            vision = "yes" if d.supports_vision else "no"
            video = "yes" if d.supports_video else "no"
            path = "litellm-sdk" if d.sdk else "fast"
            lines.append(
                f"{name:<20} {d.id:<25} {d.provider:<12} {d.upstream_model:<30} {vision:<6} {video:<6} {path:<11}"
                f" {d.api_base} timeout={d.timeout:g}s {' '.join(limits)}".rstrip()
            )
    lines.append("")
    lines.extend(endpoint_table(groups))
    rs = config.router_settings
    lines.append("")
    strategies = {name: rs.routing_strategy or default_strategy(deployments) for name, deployments in groups.items()}
    routing = rs.routing_strategy or "per group: " + ", ".join(f"{g} {s}" for g, s in strategies.items())
    lines.append(
        f"routing: {routing}, retries={rs.num_retries}, allowed_fails={rs.allowed_fails}, "
        f"cooldown={rs.cooldown_time:g}s"
    )
    for mapping in rs.fallbacks:
        for source, targets in mapping.items():
            lines.append(f"fallback: {source} -> {', '.join(targets)}")
    if rs.default_fallbacks:
        lines.append(f"default fallbacks: {', '.join(rs.default_fallbacks)}")
    redis = rs.redis_address()
    if redis:
        shown = redis.split("@")[-1] if "@" in redis else redis.removeprefix("redis://")
        lines.append(f"limits: shared through Redis at {shown} (rpm, tpm, max_parallel_requests, cooldowns)")
    else:
        lines.append("limits: per process (configure router_settings.redis_host to share them)")
    pods = [d.id for deployments in groups.values() for d in deployments if d.per_pod]
    if pods:
        lines.append(f"per-pod endpoints (re-resolved from DNS): {', '.join(pods)}")
    keys = len(config.gateway_settings.api_keys) + (1 if config.general_settings.master_key else 0)
    lines.append(f"api keys: {keys}" if keys else "api keys: none (open access)")
    if config.general_settings.master_key:
        where = describe(keys_database_url(Settings(), env, config.general_settings.database_url))
        lines.append(f"managed keys (/key/*, /team/*): {where}")
    else:
        lines.append("managed keys (/key/*, /team/*): off (they need general_settings.master_key)")
    lines.extend(price_lines(groups))
    for warning in loaded.warnings:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def price_lines(groups: Mapping[str, list[Deployment]]) -> list[str]:
    """Where each group's prices come from; the groups without any cost 0 and say so."""
    book = PriceBook()
    book.load()
    lines = []
    for name, deployments in groups.items():
        for d in deployments:
            if "*" in d.upstream_model and d.price is None:
                lines.append(
                    f"spend: {name} ({d.id}): priced per model from litellm's price map; models it lacks cost 0"
                )
                continue
            price = book.of(d, d.upstream_model)
            if price is None:
                lines.append(
                    f"spend: {name} ({d.id}): no price, costs 0 "
                    "(set model_info.input_cost_per_token and output_cost_per_token)"
                )
            else:
                lines.append(
                    f"spend: {name} ({d.id}): {price.input_per_token:.3g} in, {price.output_per_token:.3g} out "
                    f"USD per token ({price.source})"
                )
    return lines


def _load(path: Path, env: Mapping[str, str]) -> LoadedConfig:
    loaded = load_config(path, env)
    groups = build_deployments(loaded.config, env)
    check_providers({d.provider for deployments in groups.values() for d in deployments if d.sdk})
    return loaded


def _workers(value: str) -> int:
    if value == "auto":
        return len(os.sched_getaffinity(0))
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("a number of processes, or 'auto'") from None
    if not 1 <= count <= 256:
        raise argparse.ArgumentTypeError("between 1 and 256 processes")
    return count


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gateway`` console script."""
    parser = argparse.ArgumentParser(prog="gateway", description="OpenAI-compatible gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", type=Path, help="LiteLLM-style config.yaml (default: $GATEWAY_CONFIG)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 4000)")
    serve.add_argument("--env-file", type=Path, help="dotenv file with secrets (default .env)")
    serve.add_argument(
        "--workers",
        type=_workers,
        help="processes serving the one port: a number, or 'auto' for the cores this process may use "
        "(default 1). With Redis configured (router_settings.redis_*), limits hold exactly across them; "
        "without it each worker enforces rpm and max_parallel_requests divided by the number of workers",
    )
    check = commands.add_parser("check-config", help="validate a config and print the routing table")
    check.add_argument("config", type=Path)
    check.add_argument("--env-file", type=Path, default=Path(".env"))
    args = parser.parse_args(argv)

    if args.command == "check-config":
        env = read_env(args.env_file)
        try:
            loaded = _load(args.config, env)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(routing_table(loaded, env))
        return 0
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from common.log import configure_logging
    from gateway.app import create_app
    from gateway.server import uvicorn_options

    given = {"config": args.config, "host": args.host, "port": args.port, "workers": args.workers}
    overrides = {k: v for k, v in given.items() if v}
    if args.env_file:
        overrides["env_file"] = args.env_file
    settings = Settings(**overrides)
    configure_logging(settings.log_level)
    env = read_env(settings.env_file)
    try:
        loaded = _load(settings.config, env)
        if settings.environment != "development":
            check_secrets(loaded.config, str(settings.config))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    import logging

    for warning in loaded.warnings:
        logging.getLogger("gateway").warning("config: %s", warning)
    options: dict[str, Any] = {"host": settings.host, "port": settings.port, **uvicorn_options()}
    if settings.workers == 1:
        database = keys_database_url(settings, env, loaded.config.general_settings.database_url)
        uvicorn.run(create_app(loaded.config, env, keys_database=database), **options)
    else:
        # Each worker process builds its app from the same settings (passed through the environment)
        # and writes its metrics where every worker's scrape can sum them.
        metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ.update(
            {
                "GATEWAY_CONFIG": str(settings.config.resolve()),
                "GATEWAY_ENV_FILE": str(settings.env_file.resolve()),
                "GATEWAY_WORKERS": str(settings.workers),
                "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
                "GATEWAY_SLOTS_DIR": os.path.join(metrics_dir, "slots"),
                "GATEWAY_ENGINES_DIR": os.path.join(metrics_dir, "engines"),
            }
        )
        try:
            uvicorn.run("gateway.app:app_from_environment", factory=True, workers=settings.workers, **options)
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
