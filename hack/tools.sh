#!/usr/bin/env bash
# Builds the binaries of the local control plane from source with Go, through the
# Go module proxy, and caches them by version outside the checkout:
#
#   $KURABLE_TOOLS_DIR/<tool>-<version>/<tool>    (default ~/.cache/kurable/tools)
#   $KURABLE_TOOLS_DIR/bin/<tool>                 symlinks to the versions pinned here
#
#   hack/tools.sh                          all of them (what `make test` needs)
#   hack/tools.sh kube-apiserver etcd kubectl   only these (`make demo`, `make dev`)
#
# The versions are pinned by the wrapper modules hack/{kube,etcd,helm}/go.mod (etcd's
# also pins etcdutl); a
# second run finds the cached binaries and finishes in well under a second.
# kubectl on PATH is used when it is within one minor version of kube-apiserver
# (the supported skew); otherwise it is built from the same Kubernetes release.
#
# A first build compiles a few thousand Go packages (README: "What a first run costs"):
# it shows the packages compiled so far, and keeps go's output in
# $KURABLE_TOOLS_DIR/<tool>-<version>.log for when it fails.
set -euo pipefail

ALL_TOOLS=(kube-apiserver kubectl etcd helm)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tools_dir=${KURABLE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kurable/tools}
mkdir -p "$tools_dir/bin"

log() { printf 'tools: %s\n' "$*" >&2; }

# version_of DIR MODULE: the version of MODULE that wrapper module DIR requires.
version_of() {
  (cd "$here/$1" && go list -m -f '{{.Version}}' "$2")
}

# progress NAME TOTAL: count the package lines of `go build -v` on stdin; show them as
# NAME n/TOTAL packages (on a terminal one line rewritten, else a line per 10%).
progress() {
  local name=$1 total=$2 n=0 pct shown=-1
  while IFS= read -r _; do
    n=$((n + 1))
    pct=$((n * 100 / total))
    if [ -t 2 ]; then
      printf '\rtools: building %s: %d/%d packages (%d%%) ' "$name" "$n" "$total" "$pct" >&2
    elif [ $((pct / 10)) -gt "$shown" ]; then
      shown=$((pct / 10))
      log "building $name: $n/$total packages ($pct%)"
    fi
  done
  if [ -t 2 ]; then printf '\n' >&2; fi
}

# build NAME VERSION WRAPPER PACKAGE LDFLAGS: go build PACKAGE inside WRAPPER into the cache.
build() {
  local name=$1 version=$2 wrapper=$3 package=$4 ldflags=$5
  local dest="$tools_dir/$name-$version/$name"
  if [ ! -x "$dest" ]; then
    log "building $name $version from source (first run only; cached in $tools_dir)"
    mkdir -p "$(dirname "$dest")"
    local start=$SECONDS total
    local buildlog="$tools_dir/$name-$version.log"
    log "downloading $name's modules"
    (cd "$here/$wrapper" && go mod download)
    total=$(cd "$here/$wrapper" && go list -deps "$package" | wc -l)
    if ! (cd "$here/$wrapper" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
      go build -v -trimpath -ldflags "-s -w $ldflags" -o "$dest.tmp.$$" "$package" 2>&1) |
      tee "$buildlog" | progress "$name" "$total"; then
      log "building $name failed; the end of $buildlog:"
      tail -n 20 "$buildlog" >&2
      return 1
    fi
    mv -f "$dest.tmp.$$" "$dest"
    log "built $name $version in $((SECONDS - start))s"
  fi
  ln -sfn "$dest" "$tools_dir/bin/$name"
}

kube_version=$(version_of kube k8s.io/kubernetes)
kube_minor=$(echo "$kube_version" | cut -d. -f2)
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
kube_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$kube_minor"
  kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$now"
done

tool_kube-apiserver() {
  build kube-apiserver "$kube_version" kube k8s.io/kubernetes/cmd/kube-apiserver "$kube_ldflags"
}

# kubectl: one on PATH within the supported skew (+-1 minor) is good enough.
tool_kubectl() {
  local path_kubectl path_minor=""
  path_kubectl=$(command -v kubectl || true)
  if [ -n "$path_kubectl" ] && [ "$(readlink -f "$path_kubectl")" != "$(readlink -f "$tools_dir/bin/kubectl" 2>/dev/null)" ]; then
    path_minor=$("$path_kubectl" version --client -o json 2>/dev/null |
      sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -n 1)
  fi
  if [ -n "$path_minor" ] && [ $((path_minor - kube_minor)) -le 1 ] && [ $((kube_minor - path_minor)) -le 1 ]; then
    log "using kubectl on PATH ($path_kubectl, minor $path_minor; kube-apiserver is 1.$kube_minor)"
    ln -sfn "$path_kubectl" "$tools_dir/bin/kubectl"
  else
    build kubectl "$kube_version" kube k8s.io/kubernetes/cmd/kubectl "$kube_ldflags"
  fi
}

tool_etcd() {
  local etcd_version
  etcd_version=$(version_of etcd go.etcd.io/etcd/server/v3)
  if ! build etcd "$etcd_version" etcd go.etcd.io/etcd/server/v3 \
    "-X go.etcd.io/etcd/api/v3/version.GitSHA=$etcd_version"; then
    # Debian's etcd 3.4 is older than what Kubernetes >= 1.31 supports (3.5.11+):
    # a last resort so that a machine without the Go proxy can still run something.
    if command -v etcd >/dev/null; then
      log "WARNING: could not build etcd $etcd_version; falling back to $(command -v etcd)," \
        "which may be older than Kubernetes 1.$kube_minor supports"
      ln -sfn "$(command -v etcd)" "$tools_dir/bin/etcd"
    else
      exit 1
    fi
  fi
  # etcdutl (same release): restores a snapshot into a fresh data directory; the backup
  # tests use it, as an operator would (docs/operations.md).
  build etcdutl "$etcd_version" etcd go.etcd.io/etcd/etcdutl/v3 \
    "-X go.etcd.io/etcd/api/v3/version.GitSHA=$etcd_version"
}

tool_helm() {
  local helm_version helm_k8s helm_k8s_minor
  helm_version=$(version_of helm helm.sh/helm/v3)
  helm_k8s=$(version_of helm k8s.io/client-go)
  helm_k8s_minor=$(echo "$helm_k8s" | cut -d. -f2)
  build helm "$helm_version" helm helm.sh/helm/v3/cmd/helm \
    "-X helm.sh/helm/v3/internal/version.version=$helm_version \
     -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
     -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
     -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$helm_k8s_minor \
     -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
     -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$helm_k8s_minor"
}

wanted=("$@")
if [ ${#wanted[@]} -eq 0 ]; then wanted=("${ALL_TOOLS[@]}"); fi
for tool in "${wanted[@]}"; do
  if ! declare -F "tool_$tool" >/dev/null; then
    log "unknown tool $tool (known: ${ALL_TOOLS[*]})"
    exit 2
  fi
done
for tool in "${wanted[@]}"; do
  "tool_$tool"
done

log "ready in $tools_dir/bin: $(ls "$tools_dir/bin" | tr '\n' ' ')"
