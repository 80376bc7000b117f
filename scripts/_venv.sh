# Sourced by scripts/serve and scripts/test: make .venv hold this checkout and the extras "$@" asks for.
# Re-installs only when pyproject.toml (or the extras) changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  echo "[setup] creating .venv" >&2
  "$PY" -m venv "$ROOT/.venv"
fi
extras="${1:-}"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) $extras"
stamp="$ROOT/.venv/.collab-stamp"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] pip install -e .${extras:+[$extras]}" >&2
  "$ROOT/.venv/bin/pip" install -q --disable-pip-version-check -e "$ROOT${extras:+[$extras]}"
  echo "$want" > "$stamp"
fi
