"""docker-compose.yml against the Compose specification's JSON schema (the copy check-jsonschema ships,
so offline), and the topology it describes: two replicas behind nginx hashing the room path, migrations
before any replica, healthchecks gating the start order. nginx.conf is read with crossplane."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import COMPOSE_FILE, NGINX_CONF, load_yaml, tool
from tests.support.nginx_conf import find_directives, parse_nginx, read_nginx_upstream

SERVERS = ("server-1", "server-2")


def check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    parsed: dict[str, Any] = load_yaml(COMPOSE_FILE)
    return parsed


def test_compose_file_follows_the_compose_specification() -> None:
    result = check_compose_schema(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_catches_a_broken_compose_file(tmp_path: Path, compose: dict[str, Any]) -> None:
    broken = {**compose, "services": {**compose["services"], "nginx": {**compose["services"]["nginx"], "port": 8080}}}
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    assert check_compose_schema(path).returncode != 0


def test_two_replicas_with_their_own_ids_share_the_store_and_broker(compose: dict[str, Any]) -> None:
    services = compose["services"]
    envs = [services[name]["environment"] for name in SERVERS]
    assert [env["COLLAB_REPLICA_ID"] for env in envs] == list(SERVERS)
    for key in ("COLLAB_DATABASE_URL", "COLLAB_BROKER_URL"):
        assert envs[0][key] == envs[1][key]
    database_url = envs[0]["COLLAB_DATABASE_URL"]
    assert database_url.startswith("postgresql://") and "@postgres:5432/" in database_url
    assert envs[0]["COLLAB_BROKER_URL"].startswith("redis://redis:6379")
    for env in envs:
        assert env["COLLAB_AUTO_MIGRATE"] == "off" and env["COLLAB_EXPORT_WORKER"] == "off"
    for name in SERVERS:
        assert services[name]["command"] == ["serve"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["worker"]["command"] == ["worker"] and services["worker"]["build"]["target"] == "worker"
    assert services["migrate"]["build"]["target"] == "server"


def test_start_order_is_gated_by_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postgres", "redis", "minio", *SERVERS, "nginx"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    for name in SERVERS:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"])
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["create-bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    worker = services["worker"]["depends_on"]
    assert worker["create-bucket"]["condition"] == "service_completed_successfully"
    assert worker["migrate"]["condition"] == "service_completed_successfully"
    nginx = services["nginx"]
    assert {nginx["depends_on"][name]["condition"] for name in SERVERS} == {"service_healthy"}
    assert nginx["ports"] == ["8080:8080"]
    assert "./deploy/compose/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]


def test_exports_go_to_the_bucket_the_one_shot_creates(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = services["worker"]["environment"]
    bucket = env["COLLAB_BLOB_URL"].removeprefix("s3://").split("/")[0]
    assert f"local/{bucket}" in " ".join(services["create-bucket"]["command"])
    assert env["COLLAB_S3_ENDPOINT"] == "http://minio:9000"
    assert env["COLLAB_S3_PATH_STYLE"] == "on"


def test_nginx_hashes_the_room_path_onto_both_replicas_and_keeps_websockets_open(compose: dict[str, Any]) -> None:
    upstream = read_nginx_upstream(NGINX_CONF, "collab")
    # $uri: the path only. The query string carries ?token=, which differs per user of one room.
    assert upstream.hash_key == "$uri" and upstream.consistent
    port = 8000  # the image's COLLAB_PORT
    assert upstream.servers == [f"{name}:{port}" for name in SERVERS]
    assert upstream.next_upstream_tries >= 2, "a refused connection must be retried on the next replica"
    tree = parse_nginx(NGINX_CONF)
    (ws,) = [d for d in find_directives(tree, "location") if d["args"] == ["/ws/"]]
    directives = {d["directive"]: d["args"] for d in ws["block"] if d["directive"] != "proxy_set_header"}
    headers = {tuple(d["args"]) for d in ws["block"] if d["directive"] == "proxy_set_header"}
    assert directives["proxy_pass"] == ["http://collab"]
    assert directives["proxy_http_version"] == ["1.1"]
    assert ("Upgrade", "$http_upgrade") in headers and ("Connection", "$connection_upgrade") in headers
    for timeout in ("proxy_read_timeout", "proxy_send_timeout"):
        assert int(directives[timeout][0].rstrip("s")) >= 3600
    (listen,) = find_directives(tree, "listen")
    assert listen["args"] == ["8080"]
