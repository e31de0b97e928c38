#!/usr/bin/env bash
# Builds the binaries of the local control plane from source with Go, through the
# Go module proxy, and caches them by version outside the checkout:
#
#   $KURABLE_TOOLS_DIR/<tool>-<version>/<tool>    (default ~/.cache/kurable/tools)
#   $KURABLE_TOOLS_DIR/bin/<tool>                 symlinks to the versions pinned here
#
# The versions are pinned by the wrapper modules hack/{kube,etcd,helm}/go.mod; a
# second run finds the cached binaries and finishes in well under a second.
# kubectl on PATH is used when it is within one minor version of kube-apiserver
# (the supported skew); otherwise it is built from the same Kubernetes release.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tools_dir=${KURABLE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kurable/tools}
mkdir -p "$tools_dir/bin"

log() { printf 'tools: %s\n' "$*" >&2; }

# version_of DIR MODULE: the version of MODULE that wrapper module DIR requires.
version_of() {
  (cd "$here/$1" && go list -m -f '{{.Version}}' "$2")
}

# build NAME VERSION WRAPPER PACKAGE LDFLAGS: go build PACKAGE inside WRAPPER into the cache.
build() {
  local name=$1 version=$2 wrapper=$3 package=$4 ldflags=$5
  local dest="$tools_dir/$name-$version/$name"
  if [ ! -x "$dest" ]; then
    log "building $name $version from source (first run only; cached in $tools_dir)"
    mkdir -p "$(dirname "$dest")"
    local start=$SECONDS
    (cd "$here/$wrapper" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
      go build -trimpath -ldflags "-s -w $ldflags" -o "$dest.tmp.$$" "$package")
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

build kube-apiserver "$kube_version" kube k8s.io/kubernetes/cmd/kube-apiserver "$kube_ldflags"

# kubectl: one on PATH within the supported skew (+-1 minor) is good enough.
path_kubectl=$(command -v kubectl || true)
if [ -n "$path_kubectl" ] && [ "$(readlink -f "$path_kubectl")" != "$(readlink -f "$tools_dir/bin/kubectl" 2>/dev/null)" ]; then
  path_minor=$("$path_kubectl" version --client -o json 2>/dev/null |
    sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -n 1)
fi
if [ -n "${path_minor:-}" ] && [ $((path_minor - kube_minor)) -le 1 ] && [ $((kube_minor - path_minor)) -le 1 ]; then
  log "using kubectl on PATH ($path_kubectl, minor $path_minor; kube-apiserver is 1.$kube_minor)"
  ln -sfn "$path_kubectl" "$tools_dir/bin/kubectl"
else
  build kubectl "$kube_version" kube k8s.io/kubernetes/cmd/kubectl "$kube_ldflags"
fi

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

log "ready in $tools_dir/bin: $(ls "$tools_dir/bin" | tr '\n' ' ')"
