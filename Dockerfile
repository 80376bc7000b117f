# syntax=docker/dockerfile:1
#
# collab-server container image. Two targets share every layer up to the runtime:
#
#   docker build -t collab-server .                          # server (default): serve, migrate, token
#   docker build --target worker -t collab-server-worker .   # + Debian's Chromium and the tldraw renderer
#
# The server image carries no browser: SVG/PNG/PDF exports need Chromium (~300 MB) and a bundle built
# with Node, so only the export worker's image has them. Both run as uid 10001 with `collab-server` as
# the entrypoint; the command picks the role (`serve`, `migrate`, `worker`).

ARG PYTHON_VERSION=3.11
ARG PYTHON_IMAGE=python:${PYTHON_VERSION}-slim-bookworm
ARG NODE_IMAGE=node:22-bookworm-slim

# -- builder: a virtualenv with the server and its runtime dependencies, nothing else -----------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, from pyproject.toml alone (empty packages, made from its package list, stand in
# for the code), so that a code change rebuilds only the last layer. Every dependency ships wheels: no
# compiler in this stage.
COPY pyproject.toml README.md ./
RUN python -c "import pathlib, tomllib; \
[pathlib.Path(p.replace('.', '/'), '__init__.py').parent.mkdir(parents=True, exist_ok=True) \
 or pathlib.Path(p.replace('.', '/'), '__init__.py').touch() \
 for p in tomllib.load(open('pyproject.toml', 'rb'))['tool']['setuptools']['packages']]" \
    && /opt/venv/bin/pip install --no-cache-dir . \
    && /opt/venv/bin/pip uninstall --yes collab-server
COPY collab_server ./collab_server
COPY persistence ./persistence
COPY presence ./presence
COPY exports ./exports
# Byte-compiled here: the root filesystem is read-only at run time.
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps . \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# -- runtime: what both targets share --------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    COLLAB_HOST=0.0.0.0 \
    COLLAB_PORT=8000 \
    COLLAB_LOG_JSON=on
RUN groupadd --system --gid 10001 collab \
    && useradd --system --uid 10001 --gid collab --home-dir /home/collab --create-home \
        --shell /usr/sbin/nologin collab
COPY --from=builder /opt/venv /opt/venv
WORKDIR /home/collab
USER 10001:10001
# uvicorn's orderly shutdown: stop accepting, close sockets with 1012, flush every room.
STOPSIGNAL SIGTERM
ENTRYPOINT ["collab-server"]

# -- renderer: the tldraw export page, bundled with Node from exports/renderer/web -----------------
FROM ${NODE_IMAGE} AS renderer
WORKDIR /renderer
COPY exports/renderer/web/package.json ./
RUN npm install --no-package-lock --no-audit --no-fund
COPY exports/renderer/web/ ./
RUN npm run build

# -- worker: the export worker, with Debian's Chromium for tldraw's own SVG/PNG/PDF exporter ----------
FROM runtime AS worker
ARG PYTHON_VERSION
USER 0
# Debian's packages, unpinned on purpose: the security archive replaces versions, and a pin would make
# the build fail instead of taking the fix.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium fonts-liberation fonts-noto-color-emoji \
    && rm -rf /var/lib/apt/lists/*
# Where the exports package looks for it: renderer/web/dist beside its modules.
COPY --from=renderer /renderer/dist /opt/venv/lib/python${PYTHON_VERSION}/site-packages/exports/renderer/web/dist
USER 10001:10001
CMD ["worker"]

# -- server (the default target): the realtime server; also `migrate` and `token` -------------------
FROM runtime AS server
EXPOSE 8000
# Liveness of the process only (/readyz is for load balancers). Python's urllib: the slim image has no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('COLLAB_PORT', '8000'), timeout=2)"]
CMD ["serve"]
