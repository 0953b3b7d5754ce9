#!/usr/bin/env bash
# spire-install.sh builds the SPIRE server the benchmark runs as a reference
# peer (spire-server, with cgo for its sqlite datastore) from the Go module
# proxy and caches it by version. A second run with the same version does
# nothing.
#
# Usage: test/bench/spire-install.sh             # prints the bin folder on its last line
# Env:   MESHID_CACHE     cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/meshid)
#        SPIRE_VERSION    github.com/spiffe/spire version (default v1.13.3)
set -euo pipefail

SPIRE_VERSION=${SPIRE_VERSION:-v1.13.3}
cache=${MESHID_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshid}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd -P)
bin="$cache/spire-$SPIRE_VERSION"

log() { printf 'spire: %s\n' "$*" >&2; }

if [[ -x "$bin/spire-server" ]]; then
  log "cached in $bin"
  echo "$bin"
  exit 0
fi

command -v gcc >/dev/null 2>&1 || { log "gcc is needed: spire-server's sqlite datastore is cgo"; exit 1; }

mkdir -p "$bin"
work=$(mktemp -d)
trap 'rm -rf "$work"; rm -f "$bin/spire-server.tmp"' EXIT
export GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=1

log "building spire-server $SPIRE_VERSION (a few minutes on a cold cache)"
(
  cd "$work"
  go mod init spirebuild >/dev/null 2>&1
  go get -tool "github.com/spiffe/spire/cmd/spire-server@$SPIRE_VERSION" >/dev/null 2>&1 ||
    { log "go get github.com/spiffe/spire/cmd/spire-server@$SPIRE_VERSION failed"; exit 1; }
  ldflags="-s -w -X github.com/spiffe/spire/pkg/common/version.gittag=${SPIRE_VERSION#v}"
  go build -trimpath -ldflags "$ldflags" -o "$bin/spire-server.tmp" github.com/spiffe/spire/cmd/spire-server
  mv "$bin/spire-server.tmp" "$bin/spire-server"
)

log "installed in $bin"
echo "$bin"
