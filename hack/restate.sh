#!/usr/bin/env bash
# Installs Restate for bench/peers.py into a cache keyed by version and prints the
# cache directory: the server from the npm registry (@restatedev/restate-server, its
# prebuilt binary ships inside the package) and the Python SDK from PyPI (restate-sdk,
# with hypercorn to serve it) in a virtual environment of its own.
#
#   hack/restate.sh            # -> ~/.cache/kurable/restate/<server>-<sdk>
#
# RESTATE_SERVER_VERSION and RESTATE_SDK_VERSION pin other versions.
set -euo pipefail

SERVER_VERSION="${RESTATE_SERVER_VERSION:-1.7.12}"
SDK_VERSION="${RESTATE_SDK_VERSION:-1.3.0}"
PYTHON="${PYTHON:-python3}"
DIR="${KURABLE_RESTATE_DIR:-$HOME/.cache/kurable/restate}/${SERVER_VERSION}-${SDK_VERSION}"

if [[ -f "$DIR/.installed" ]]; then
  echo "$DIR"
  exit 0
fi
command -v npm >/dev/null || { echo "hack/restate.sh: npm is needed to fetch restate-server" >&2; exit 1; }
mkdir -p "$DIR"
npm install --silent --no-audit --no-fund --prefix "$DIR/server" \
  "@restatedev/restate-server@${SERVER_VERSION}" >&2
"$PYTHON" -m venv "$DIR/venv"
"$DIR/venv/bin/pip" install --quiet "restate-sdk==${SDK_VERSION}" hypercorn >&2
binary="$(find "$DIR/server/node_modules/@restatedev" -type f -name restate-server -perm -u+x | head -1)"
[[ -n "$binary" ]] || { echo "hack/restate.sh: no restate-server binary in the npm package" >&2; exit 1; }
ln -sf "$binary" "$DIR/restate-server"
touch "$DIR/.installed"
echo "$DIR"
