#!/usr/bin/env bash
# Installs Debian's headless Chromium for the console's browser test and prints the path
# of its binary. Cached by version outside the checkout:
#
#   $KURABLE_TOOLS_DIR/chromium-<version>/     the unpacked package (dpkg -x)
#   $KURABLE_TOOLS_DIR/bin/chromium            a symlink to the launcher
#
# The package is fetched with `apt-get download` (no root, no change to the system); its
# shared libraries must be on the machine already, else (as root) `apt-get install
# --no-install-recommends` pulls them in. A second run finds the cache at once.
set -euo pipefail

tools_dir=${KURABLE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kurable/tools}
mkdir -p "$tools_dir/bin"
log() { printf 'chromium: %s\n' "$*" >&2; }

version=$(apt-cache policy chromium 2>/dev/null | sed -n 's/^ *Candidate: *//p')
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
  log "no chromium package known to apt; run apt-get update"
  exit 1
fi
dest="$tools_dir/chromium-$version"
binary="$dest/usr/lib/chromium/chromium"
if [ ! -x "$binary" ]; then
  log "fetching Debian's chromium $version (first run only; cached in $dest)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download "chromium=$version" "chromium-common=$version" >/dev/null)
  mkdir -p "$dest.tmp.$$"
  for deb in "$work"/*.deb; do dpkg -x "$deb" "$dest.tmp.$$"; done
  rm -rf "$dest"
  mv "$dest.tmp.$$" "$dest"
fi
missing=$(ldd "$binary" 2>/dev/null | sed -n 's/^\s*\(\S*\) => not found/\1/p' | sort -u)
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    log "installing chromium's shared libraries with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      "chromium=$version" "chromium-common=$version" >/dev/null
  else
    log "chromium needs these libraries: $missing (apt-get install chromium as root)"
    exit 1
  fi
fi
ln -sfn "$binary" "$tools_dir/bin/chromium"
echo "$binary"
