"""Fixtures of the deploy tests: rendered manifests once per session; the e2e suites' PostgreSQL
database and Redis fixtures, reused as they are for the topology test."""

from __future__ import annotations

import pytest

from tests.deploy.manifests import K8S, Resource, kustomize
from tests.e2e.test_postgres_durability import pg_url
from tests.e2e.test_replicas import prefix, shared_redis

__all__ = ["pg_url", "prefix", "shared_redis"]


@pytest.fixture(scope="session")
def rendered() -> list[Resource]:
    """Everything ``kubectl apply -k deploy/k8s`` would apply."""
    return kustomize(K8S)


@pytest.fixture(scope="session")
def rendered_migrate() -> list[Resource]:
    """What ``kubectl apply -k deploy/k8s/migrate`` would apply."""
    return kustomize(K8S / "migrate")
