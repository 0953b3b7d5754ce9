#!/usr/bin/env bash
# install.sh builds the control-plane binaries the e2e harness runs (etcd,
# kube-apiserver, kube-controller-manager, kubectl) from the Go module proxy
# and caches them by version. A second run with the same versions does nothing.
#
# Usage: test/controlplane/install.sh            # prints the bin folder on its last line
# Env:   MESHID_CACHE     cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/meshid)
#        ETCD_VERSION     etcd server module version (default v3.6.16)
#        KUBE_VERSION     k8s.io/kubernetes version (default v1.34.4)
set -euo pipefail

ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KUBE_VERSION=${KUBE_VERSION:-v1.34.4}
cache=${MESHID_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshid}
bin="$cache/controlplane/etcd-$ETCD_VERSION-kube-$KUBE_VERSION"

log() { printf 'controlplane: %s\n' "$*" >&2; }

if [[ -x "$bin/etcd" && -x "$bin/kube-apiserver" && -x "$bin/kube-controller-manager" && -x "$bin/kubectl" ]]; then
  log "cached in $bin"
  echo "$bin"
  exit 0
fi

log "first build of the control plane (etcd $ETCD_VERSION; kube-apiserver, kube-controller-manager, kubectl $KUBE_VERSION)"
log "from the Go module proxy into $bin: about 7 minutes on 2 cores, once (cached by version)"
SECONDS=0
mkdir -p "$bin"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0

if [[ ! -x "$bin/etcd" ]]; then
  log "building etcd $ETCD_VERSION (about a minute on a cold cache)"
  mkdir -p "$work/etcd"
  (
    cd "$work/etcd"
    go mod init meshid.local/etcd >/dev/null 2>&1
    cat >tools.go <<GO
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1
    go mod tidy >/dev/null 2>&1
    go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$bin/etcd.tmp" "$bin/etcd"
  )
fi

if [[ ! -x "$bin/kube-apiserver" || ! -x "$bin/kube-controller-manager" || ! -x "$bin/kubectl" ]]; then
  log "building kube-apiserver, kube-controller-manager, kubectl $KUBE_VERSION (about 5 minutes on a cold cache)"
  mkdir -p "$work/kube"
  (
    cd "$work/kube"
    go mod init meshid.local/kube >/dev/null 2>&1
    gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
    [[ -f "$gomod" ]] || { log "cannot find the go.mod of k8s.io/kubernetes@$KUBE_VERSION"; exit 1; }
    staging=${KUBE_VERSION/v1./v0.}
    {
      echo "require k8s.io/kubernetes $KUBE_VERSION"
      grep -oE '^[[:space:]]*k8s.io/[a-z0-9-]+ => ./staging/' "$gomod" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
    } >>go.mod
    cat >tools.go <<GO
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
    go mod tidy >/dev/null 2>&1
    minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
    ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
    for cmd in kube-apiserver kube-controller-manager kubectl; do
      log "building $cmd ($SECONDS s so far)"
      go build -trimpath -ldflags "$ldflags" -o "$bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
      mv "$bin/$cmd.tmp" "$bin/$cmd"
      log "built $cmd"
    done
  )
fi

log "installed in $bin (built in $SECONDS s)"
echo "$bin"
