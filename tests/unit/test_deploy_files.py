"""deploy/: the compose file, the configuration it mounts, the dispatcher list and the
systemd unit agree with each other and with the code, even where Docker cannot run (the
Kamailio configuration itself is checked by ``kamailio -c`` in tests/test_deploy_kamailio.py)."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import yaml

from softswitch.config import load_config
from softswitch.workers import worker_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_runs_softswitch_postgres_redis_and_kamailio() -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) == {"softswitch", "postgres", "redis", "kamailio"}
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} missing"
        build = service.get("build")
        if build:
            context = DEPLOY / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).exists(), name
    assert set(services["softswitch"]["depends_on"]) == {"redis", "postgres"}
    named = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}
    assert set(doc["volumes"]) <= named


def test_the_dispatcher_list_names_each_worker_of_the_compose_configuration(tmp_path: Path) -> None:
    config = load_config(str(DEPLOY / "softswitch.toml"), env={})
    command = compose()["services"]["softswitch"]["command"]
    workers = int(command[command.index("--workers") + 1])
    assert workers == config.workers
    ports = {worker_config(config, i, workers).sip_port for i in range(workers)}
    listed = set()
    for line in (DEPLOY / "kamailio" / "dispatcher.list").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            listed.add(int(re.search(r"sip:[^:]+:(\d+)", line).group(1)))  # type: ignore[union-attr]
    assert listed == ports
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    # The compose file points the workers at its Redis and PostgreSQL.
    env = compose()["services"]["softswitch"]["environment"]
    assert env["SOFTSWITCH_STORE_URL"].startswith("postgresql://")


def test_systemd_unit_runs_the_workers_and_stops_them_gracefully() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY / "systemd" / "softswitch.service")
    service = unit["Service"]
    assert "serve" in service["ExecStart"] and "--workers" in service["ExecStart"]
    assert service["KillSignal"] == "SIGTERM" and service["KillMode"] == "mixed"
    assert int(service["TimeoutStopSec"]) >= 30
    assert unit["Install"]["WantedBy"] == "multi-user.target"
