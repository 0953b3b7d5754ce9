#!/usr/bin/env bash
# demo.sh: the main job of meshid, end to end, on a local control plane.
# It starts etcd + kube-apiserver, creates an anchor and issuer with openssl,
# stores them as the issuer Secret and trust-bundle ConfigMap, starts
# meshid-ca, gets a certificate for a service account as a workload would,
# verifies it with openssl, shows a refusal, runs mesh traffic through three
# meshid-proxies under a policy, shows meshid check, verify and the dashboard,
# rotates the trust anchor under traffic with no failed request, and stops
# everything it started.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cpbin=$(test/controlplane/install.sh 2>/dev/null | tail -n1)
kubectl="$cpbin/kubectl"
work=$(mktemp -d "${TMPDIR:-/tmp}/meshid-demo.XXXXXX")
ca_pid=""
pids=()

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
cleanup() {
  status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [[ -n "$ca_pid" ]] && kill "$ca_pid" 2>/dev/null && wait "$ca_pid" 2>/dev/null || true
  go run ./test/cmd/cluster down --dir "$work/cluster" >/dev/null 2>&1 || true
  if [[ $status -ne 0 ]]; then
    echo "demo failed (exit $status); logs kept in $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

step "Starting etcd and kube-apiserver on 127.0.0.1"
kubeconfig=$(go run ./test/cmd/cluster up --dir "$work/cluster" --bin "$cpbin" | tail -n1)
k() { "$kubectl" --kubeconfig "$kubeconfig" "$@"; }
k version 2>/dev/null | grep Server

step "Creating a trust anchor and an issuer (intermediate CA) with openssl"
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -keyout anchor.key -out anchor.crt -subj "/O=meshid demo/CN=meshid demo anchor" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout issuer.key -out issuer.csr -subj "/O=meshid demo/CN=meshid demo issuer" 2>/dev/null
printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n' > issuer.ext
openssl x509 -req -in issuer.csr -CA anchor.crt -CAkey anchor.key -CAcreateserial -days 2 \
  -extfile issuer.ext -out issuer.crt 2>/dev/null
chmod 0600 anchor.key issuer.key
echo "anchor: $(openssl x509 -in anchor.crt -noout -fingerprint -sha256)"
cd "$root"

step "Storing them as the issuer Secret and the trust-bundle ConfigMap"
k create namespace meshid
k -n meshid create secret tls meshid-issuer --cert "$work/issuer.crt" --key "$work/issuer.key"
k -n meshid create configmap meshid-trust-bundle --from-file=ca-bundle.crt="$work/anchor.crt"

step "Starting meshid-ca"
bin/meshid-ca --kubeconfig "$kubeconfig" --namespace meshid \
  --issuer-secret meshid-issuer --trust-bundle meshid-trust-bundle \
  --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --fleet-report-interval 1s >"$work/ca.log" 2>&1 &
ca_pid=$!
addr() { sed -n "s/.*\"msg\":\"$1\".*\"address\":\"\\([^\"]*\\)\".*/\\1/p" "$work/ca.log" | head -n1; }
for _ in $(seq 100); do
  ca_addr=$(addr "serving the identity API"); admin_addr=$(addr "serving admin endpoints")
  if [[ -n "$admin_addr" ]] && curl -fsS "http://$admin_addr/ready" >/dev/null 2>&1; then break; fi
  kill -0 "$ca_pid" 2>/dev/null || { cat "$work/ca.log"; exit 1; }
  sleep 0.1
done
curl -fsS "http://$admin_addr/ready"
echo "meshid-ca serves the identity API on $ca_addr, admin on $admin_addr"

step "A workload: service account shop/checkout asks for its identity"
k create namespace shop
k -n shop create serviceaccount checkout
k -n shop create token checkout --audience identity.meshid.dev --duration 1h > "$work/token"
mkdir -m 700 "$work/svid"
bin/meshid certify --ca "$ca_addr" --ca-id spiffe://cluster.local/ns/meshid/sa/meshid-ca \
  --token-file "$work/token" --trust-bundle-file "$work/anchor.crt" --out-dir "$work/svid"

step "openssl checks the chain: leaf -> issuer -> anchor"
openssl verify -CAfile "$work/anchor.crt" -untrusted "$work/issuer.crt" "$work/svid/svid.pem"
openssl x509 -in "$work/svid/svid.pem" -noout -ext subjectAltName,basicConstraints,extendedKeyUsage

step "A token for another audience is refused"
k -n shop create token checkout --audience https://kubernetes.default.svc.cluster.local > "$work/wrong-token"
if bin/meshid certify --ca "$ca_addr" --ca-id spiffe://cluster.local/ns/meshid/sa/meshid-ca \
  --token-file "$work/wrong-token" --trust-bundle-file "$work/anchor.crt" 2>&1; then
  echo "a token for another audience was accepted" >&2; exit 1
fi

step "The audit line and the metrics"
grep '"certificate issued"' "$work/ca.log"
curl -fsS "http://$admin_addr/metrics" | grep -E '^meshid_ca_(certificates_(issued|refused)_total|issuer_expiry)'

step "Mesh traffic: web, db and evil behind meshid-proxy; db allows only web"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 20000)); }
go build -o "$work/hello" ./test/cmd/hello
db_app=127.0.0.1:$(free_port); db_in=127.0.0.1:$(free_port)
web_out=127.0.0.1:$(free_port); evil_out=127.0.0.1:$(free_port)
"$work/hello" --listen "$db_app" --name db >"$work/db-app.log" 2>&1 & pids+=($!)
cat > "$work/db-policy.yaml" <<POLICY
ports:
- port: ${db_in##*:}
  mode: deny
  allow:
  - serviceAccount: shop/web
POLICY
echo "db's policy:"; sed 's/^/  /' "$work/db-policy.yaml"
start_proxy() { # NAME ARGS...
  local name=$1; shift
  k -n shop create serviceaccount "$name" >/dev/null 2>&1 || true
  k -n shop create token "$name" --audience identity.meshid.dev --duration 1h > "$work/$name.token"
  local admin=127.0.0.1:$(free_port)
  bin/meshid-proxy --ca "$ca_addr" --ca-id spiffe://cluster.local/ns/meshid/sa/meshid-ca \
    --token-file "$work/$name.token" --trust-bundle-file "$work/anchor.crt" \
    --admin-listen "$admin" "$@" >"$work/$name-proxy.log" 2>&1 & pids+=($!)
  for _ in $(seq 100); do curl -fsS "http://$admin/ready" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "http://$admin/ready" >/dev/null || { cat "$work/$name-proxy.log"; exit 1; }
  eval "${name}_admin=$admin"
}
start_proxy db --inbound "$db_in=$db_app" --policy "$work/db-policy.yaml"
start_proxy web --outbound "$web_out=$db_in,id=spiffe://cluster.local/ns/shop/sa/db"
start_proxy evil --outbound "$evil_out=$db_in"
echo "web -> db:  $(curl -fsS "http://$web_out/")"
if out=$(curl -fsS "http://$evil_out/" 2>&1); then echo "evil got through: $out" >&2; exit 1; fi
echo "evil -> db: refused; db's proxy says:"
grep '"connection refused"' "$work/db-proxy.log" | head -n1

step "Each proxy's /identity"
for name in web db evil; do
  admin_var="${name}_admin"
  echo "$name:"; curl -fsS "http://${!admin_var}/identity" | grep -v chain_pem | sed 's/^/  /'
done

step "meshid check: the whole chain, with the proxies' live certificates"
bin/meshid check --kubeconfig "$kubeconfig" --deployment "" --proxies "$web_admin,$db_admin,$evil_admin"

step "meshid verify: a real handshake to db, as shop/web and as shop/evil"
verify=(--kubeconfig "$kubeconfig" --ca "$ca_addr" --trust-bundle-file "$work/anchor.crt")
bin/meshid verify "$db_in" --as shop/web --expect-id spiffe://cluster.local/ns/shop/sa/db "${verify[@]}"
echo
if bin/meshid verify "$db_in" --as shop/evil "${verify[@]}"; then echo "evil was accepted" >&2; exit 1; fi

step "meshid dashboard: the same answers as a web page on loopback (here read with curl)"
bin/meshid dashboard --kubeconfig "$kubeconfig" --deployment "" --port 0 >"$work/dashboard.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  dash=$(sed -n 's#^meshid dashboard on \(http://[^ ]*\) .*#\1#p' "$work/dashboard.log")
  [[ -n "$dash" ]] && break
  sleep 0.1
done
[[ -n "$dash" ]] || { cat "$work/dashboard.log"; exit 1; }
echo "$dash (Trust, Fleet and Policy pages; it refuses other Host headers)"
curl -fsS "${dash}trust" | sed -n '/id="outage"/,/<\/p>/p' | sed -e 's/<[^>]*>//g' -e '/^ *$/d' -e 's/^/  /'
echo "  a request naming another host: HTTP $(curl -s -o /dev/null -w '%{http_code}' -H 'Host: evil.example' "$dash")"

step "meshid rotate-anchor: a new trust anchor, under traffic, with no restarts"
ok=0; failed=0
(
  while [[ ! -f "$work/stop-traffic" ]]; do
    if curl -fsS --max-time 5 "http://$web_out/" >/dev/null 2>&1; then echo ok; else echo failed; fi
    sleep 0.02
  done
) > "$work/traffic.log" &
traffic_pid=$!
bin/meshid rotate-anchor start --generate --write-anchor-key "$work/new-anchor.key" --kubeconfig "$kubeconfig" --reissue-window 3s --stage-timeout 2m
touch "$work/stop-traffic"; wait "$traffic_pid" || true
ok=$(grep -c '^ok$' "$work/traffic.log" || true); failed=$(grep -c '^failed$' "$work/traffic.log" || true)
echo "traffic web -> db during the rotation: $ok requests ok, $failed failed"
[[ "$failed" == 0 ]] || { echo "requests failed during the rotation" >&2; exit 1; }
echo "web's certificate now:"
curl -fsS "http://$web_admin/identity" | grep -E '"(issuer|bundle_sha256|anchors)"' | sed 's/^/  /'
bin/meshid check --kubeconfig "$kubeconfig" --deployment "" --proxies "$web_admin,$db_admin,$evil_admin" | grep -E '^(.  )?(bundle|anchor|issuer|proxy|Time to outage|Status)' || true

step "Done: everything the demo started is being stopped"
