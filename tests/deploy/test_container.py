"""The Dockerfile, checked without a Docker daemon: hadolint, the stages and their entrypoint and command,
what the build context holds, and the HEALTHCHECK's own command run against a real server."""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.deploy.manifests import DOCKERFILE, tool
from tests.support.servers import REPO, ServerProcess, free_port

ServerFactory = Callable[..., ServerProcess]


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        values = [value for key, value in self.instructions if key == keyword]
        return values[-1] if values else None

    def all(self, keyword: str) -> list[str]:
        return [value for key, value in self.instructions if key == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions per stage (continuation lines joined, comments dropped)."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    stages: list[Stage] = []
    for line in lines:
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = value.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=words[0]))
        elif stages:
            stages[-1].instructions.append((keyword, value.strip()))
    return stages


def stages_by_name() -> dict[str, Stage]:
    return {stage.name: stage for stage in parse_dockerfile(DOCKERFILE.read_text())}


def inherited(stage: str, keyword: str) -> str | None:
    """An instruction's effective value in ``stage``, following FROM to earlier stages."""
    stages = stages_by_name()
    current: Stage | None = stages[stage]
    while current is not None:
        value = current.last(keyword)
        if value is not None:
            return value
        current = stages.get(current.base)
    return None


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile() -> None:
    bad = "FROM python:latest\nRUN apt-get install chromium\n"
    result = subprocess.run([tool("hadolint"), "-"], input=bad, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_targets_server_by_default_and_worker_on_request() -> None:
    stages = parse_dockerfile(DOCKERFILE.read_text())
    names = [stage.name for stage in stages]
    assert names[-1] == "server", "`docker build .` must build the server"
    by_name = {stage.name: stage for stage in stages}
    assert by_name["server"].base == "runtime" and by_name["worker"].base == "runtime"
    assert by_name["runtime"].base == "${PYTHON_IMAGE}"
    assert "PYTHON_VERSION=3.11\n" in DOCKERFILE.read_text()
    assert "PYTHON_IMAGE=python:${PYTHON_VERSION}-slim" in DOCKERFILE.read_text()
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "collab-server" in scripts
    for target, command in (("server", ["serve"]), ("worker", ["worker"])):
        assert json.loads(inherited(target, "ENTRYPOINT") or "null") == ["collab-server"]
        assert json.loads(inherited(target, "CMD") or "null") == command
        assert inherited(target, "STOPSIGNAL") == "SIGTERM"
        user = inherited(target, "USER") or "0"
        assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0, f"{target} runs as root"
    assert by_name["server"].last("EXPOSE") == "8000"


def test_only_the_worker_carries_a_browser_and_only_runtime_dependencies_are_installed() -> None:
    stages = stages_by_name()
    for name in ("runtime", "server"):
        assert not any("apt-get" in run or "npm" in run for run in stages[name].all("RUN")), name
    assert any("chromium" in run for run in stages["worker"].all("RUN"))
    builder = " ".join(stages["builder"].all("RUN"))
    assert "pip install" in builder and "[test]" not in builder and "-e " not in builder
    # Every package the project installs is copied into the build (a new one cannot be forgotten), and
    # the dependency layer's stand-in packages are made from pyproject.toml's list, whatever it holds.
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    copied = {value.split()[0] for value in stages["builder"].all("COPY")}
    for package in packages:
        assert package.split(".")[0] in copied, f"the builder does not COPY {package}"
    assert "tomllib.load(open('pyproject.toml', 'rb'))['tool']['setuptools']['packages']" in builder


def test_the_build_context_has_what_the_dockerfile_copies_and_nothing_heavy() -> None:
    patterns = [
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        for pattern in patterns:
            bare = pattern.removeprefix("**/")
            parts = path.split("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            candidates = prefixes if not pattern.startswith("**/") else parts + prefixes
            if any(fnmatch.fnmatch(candidate, bare) for candidate in candidates):
                return True
        return False

    for stage in parse_dockerfile(DOCKERFILE.read_text()):
        for value in stage.all("COPY"):
            if value.startswith("--from"):
                continue
            for source in value.split()[:-1]:
                assert not ignored(source.rstrip("/")), f"COPY {source} is excluded by .dockerignore"
    for heavy in (".venv", "tests/js/node_modules", ".git", "collab.sqlite3", "bench", "exports/renderer/web/dist"):
        assert ignored(heavy), f"{heavy} would be sent to the Docker daemon"


def healthcheck_command() -> list[str]:
    value = stages_by_name()["server"].last("HEALTHCHECK") or ""
    exec_form = value[value.index("CMD") + 3 :].strip()
    command: list[str] = json.loads(exec_form)
    assert command[0] == "python", "the slim image has no curl: the check runs with the image's Python"
    return [sys.executable, *command[1:]]


@pytest.mark.e2e
def test_the_healthcheck_command_passes_on_a_live_server_and_fails_without_one(server_factory: ServerFactory) -> None:
    server = server_factory()
    command = healthcheck_command()
    live = subprocess.run(command, env={"COLLAB_PORT": str(server.port)}, capture_output=True, timeout=30, check=False)
    assert live.returncode == 0, live.stderr
    dead = subprocess.run(command, env={"COLLAB_PORT": str(free_port())}, capture_output=True, timeout=30, check=False)
    assert dead.returncode != 0


def test_pyproject_lists_every_package() -> None:
    """The package list is explicit (the Dockerfile reads it): a package missing from it would be missing
    from the image."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for top in ("collab_server", "persistence", "presence", "exports")
        for init in (REPO / top).rglob("__init__.py")
        if "node_modules" not in init.parts
    }
    assert found == listed
