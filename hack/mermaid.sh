#!/usr/bin/env bash
# Fetches Mermaid (from the npm registry, with npm) for the browser test, which renders
# `kurable graph` output with it to prove the syntax; prints the path of mermaid.min.js.
# Not shipped: the console draws its own SVG. Cached by version:
#
#   $KURABLE_TOOLS_DIR/mermaid-<version>/mermaid.min.js
set -euo pipefail

version=12.3.0
tools_dir=${KURABLE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kurable/tools}
dest="$tools_dir/mermaid-$version"
if [ ! -f "$dest/mermaid.min.js" ]; then
  printf 'mermaid: fetching mermaid %s (first run only; cached in %s)\n' "$version" "$dest" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "mermaid@$version" >/dev/null)
  tar -xzf "$work/mermaid-$version.tgz" -C "$work" package/dist/mermaid.min.js package/LICENSE
  mkdir -p "$dest"
  cp "$work/package/LICENSE" "$dest/LICENSE"
  mv "$work/package/dist/mermaid.min.js" "$dest/mermaid.min.js"
fi
echo "$dest/mermaid.min.js"
