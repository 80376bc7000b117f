"""Read the deploy files the way their tools do: kustomize renders, YAML documents, pod specs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.support.servers import REPO

K8S = REPO / "deploy" / "k8s"
COMPOSE_FILE = REPO / "docker-compose.yml"
NGINX_CONF = REPO / "deploy" / "compose" / "nginx.conf"
OBSERVABILITY = REPO / "deploy" / "observability"
DOCKERFILE = REPO / "Dockerfile"

Resource = dict[str, Any]


def tool(name: str) -> str:
    """A command-line tool the test extra installs into the venv (found beside this Python first)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is not installed: run scripts/test (it installs the test extra)")
    return found


def kustomize(directory: Path) -> list[Resource]:
    """``kubectl kustomize directory`` (kustomize as kubectl embeds it), parsed."""
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kustomize build {directory} failed: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(resources: list[Resource], kind: str, name: str) -> Resource:
    for resource in resources:
        if resource["kind"] == kind and resource["metadata"]["name"] == name:
            return resource
    raise AssertionError(f"no {kind} {name!r} rendered")


def pod_spec(workload: Resource) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Resource) -> Iterator[dict[str, Any]]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The container's ``env`` entries by name."""
    return {entry["name"]: entry for entry in container.get("env", [])}


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
