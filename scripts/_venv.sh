# Sourced by scripts/serve and scripts/test: make (once) and use the project's virtual environment.
# PYTHON picks the interpreter (Python 3.11 or newer); VENV picks where the environment lives.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "mediaserver needs Python 3.11 or newer; set PYTHON=python3.11")'
  "$PYTHON" -m venv "$VENV"
fi
install_project() {  # $1: extras, e.g. "[test]"
  local stamp="$VENV/.installed$1"
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT$1"
    touch "$stamp"
  fi
}
