"""No Docker engine runs here, so the deployment files are checked by reading them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_has_the_whole_trust_deployment() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "migrate", "app1", "app2", "lb"} <= set(services)


def test_every_long_running_service_has_a_health_check() -> None:
    for name, service in compose()["services"].items():
        if name != "migrate":
            assert "healthcheck" in service, name


def test_apps_start_only_after_migrations_and_healthy_stores() -> None:
    services = compose()["services"]
    for app in ("app1", "app2"):
        needs = services[app]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully"
        assert needs["postgres"]["condition"] == "service_healthy"
        assert needs["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["whiteboard", "db", "upgrade"]
    assert services["lb"]["depends_on"]["app1"]["condition"] == "service_healthy"


def test_apps_are_wired_to_postgresql_redis_and_a_shared_secret() -> None:
    services = compose()["services"]
    for app in ("app1", "app2", "migrate"):
        env = services[app]["environment"]
        assert env["WHITEBOARD_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert "@postgres:5432/" in env["WHITEBOARD_DATABASE_URL"]
        assert env["WHITEBOARD_REDIS_URL"] == "redis://redis:6379/0"
        # Required, never defaulted: every replica must sign cookies with the same key.
        assert ":?" in env["WHITEBOARD_SECRET_KEY"]


def test_the_apps_trust_forwarded_headers_only_from_the_load_balancer() -> None:
    c = compose()
    lb_ip = c["services"]["lb"]["networks"]["board"]["ipv4_address"]
    for app in ("app1", "app2"):
        trusted = c["services"][app]["environment"]["WHITEBOARD_TRUSTED_PROXIES"]
        assert trusted.endswith(f"{lb_ip}}}")


def test_the_load_balancer_upgrades_websockets_and_spreads_over_both_replicas() -> None:
    conf = (DOCKER / "nginx.conf").read_text()
    assert "proxy_set_header Upgrade $http_upgrade" in conf
    assert "proxy_set_header Connection $connection_upgrade" in conf
    assert len(re.findall(r"server app[12]:8000", conf)) == 2
    assert "X-Forwarded-Proto" in conf and "X-Forwarded-For" in conf
    assert len(re.findall(r"server app[12]:2575", conf)) == 2


def test_the_image_runs_as_a_non_root_user_with_a_health_check() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
