#!/usr/bin/env bash
# install.sh builds the step-ca server the e2e harness runs as meshid's
# upstream authority, from github.com/smallstep/certificates on the Go module
# proxy, and caches it by version. A second run with the same version does
# nothing.
#
# Usage: test/stepca/install.sh            # prints the binary's path on its last line
# Env:   MESHID_CACHE      cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/meshid)
#        STEPCA_VERSION    github.com/smallstep/certificates version (default v0.30.2)
set -euo pipefail

STEPCA_VERSION=${STEPCA_VERSION:-v0.30.2}
cache=${MESHID_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshid}
bin="$cache/stepca/$STEPCA_VERSION"

log() { printf 'stepca: %s\n' "$*" >&2; }

if [[ -x "$bin/step-ca" ]]; then
  log "cached in $bin"
  echo "$bin/step-ca"
  exit 0
fi

log "first build of step-ca $STEPCA_VERSION from the Go module proxy into $bin (once; cached by version)"
SECONDS=0
mkdir -p "$bin"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0
(
  cd "$work"
  go mod init meshid.local/stepca >/dev/null 2>&1
  # Getting the command package (not only the module) makes go.sum cover
  # its KMS imports.
  go get "github.com/smallstep/certificates/cmd/step-ca@$STEPCA_VERSION" >/dev/null 2>&1
  go build -trimpath -ldflags "-s -w -X main.Version=${STEPCA_VERSION#v}" -o "$bin/step-ca.tmp" github.com/smallstep/certificates/cmd/step-ca
  mv "$bin/step-ca.tmp" "$bin/step-ca"
)
log "installed $bin/step-ca (built in $SECONDS s)"
echo "$bin/step-ca"
