#!/usr/bin/env bash
# run.sh runs govulncheck on the module against an offline copy of the Go
# vulnerability database, so it needs only the Go module proxy. The database
# is built once per golang.org/x/vulndb version from the module's data/osv
# (by test/vuln/gendb) and cached, like the govulncheck binary; later runs
# read the cache.
#
# Usage: test/vuln/run.sh [govulncheck flags and patterns]   # default: ./...
#        exits with govulncheck's status (3 when a called vulnerability is found)
# Env:   MESHID_CACHE          cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/meshid)
#        VULNDB_VERSION        golang.org/x/vulndb version (default v0.0.0-20261105234957-e22db6528018)
#        GOVULNCHECK_VERSION   golang.org/x/vuln version (default v1.9.0)
set -euo pipefail

VULNDB_VERSION=${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}
GOVULNCHECK_VERSION=${GOVULNCHECK_VERSION:-v1.9.0}
cache=${MESHID_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshid}
db="$cache/vulndb-$VULNDB_VERSION"
root=$(cd "$(dirname "$0")/../.." && pwd)

log() { printf 'vuln: %s\n' "$*" >&2; }

if [[ -f "$db/index/modules.json" ]]; then
  log "database cached in $db"
else
  log "building the vulnerability database from golang.org/x/vulndb@$VULNDB_VERSION (a 25 MB download)"
  mkdir -p "$cache"
  tmp=$(mktemp -d "$db.tmp.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # Outside our module, so that go.mod and go.sum stay as they are.
  info=$(cd "$tmp" && GOWORK=off go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION")
  src=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$info")
  infofile=$(sed -n 's/^[[:space:]]*"Info": "\(.*\)",$/\1/p' <<<"$info")
  [[ -d "$src/data/osv" ]] || { log "no data/osv in golang.org/x/vulndb@$VULNDB_VERSION"; exit 1; }
  modified=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$infofile")
  (cd "$root" && go run ./test/vuln/gendb -osv "$src/data/osv" -out "$tmp/db" ${modified:+-modified "$modified"})
  rm -rf "$db"
  mv "$tmp/db" "$db"
  rm -rf "$tmp"
  trap - EXIT
  log "database built in $db"
fi

# Installed, not `go run`: go run turns the exit status 3 of a finding into 1.
tool="$cache/govulncheck-$GOVULNCHECK_VERSION"
if [[ ! -x "$tool/govulncheck" ]]; then
  log "installing govulncheck $GOVULNCHECK_VERSION"
  (cd "$cache" && GOWORK=off GOBIN="$tool" go install "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION")
fi

(($#)) || set -- ./...
cd "$root"
exec "$tool/govulncheck" -db "file://$db" "$@"
