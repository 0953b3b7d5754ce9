package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/sidecar"
	"github.com/meshid/meshid/test/bench"
	"github.com/meshid/meshid/test/node"
	"github.com/meshid/meshid/webhooks/inject"
)

// The transparent pair runs on a test node (package node): each pod in a
// network namespace of its own on the node's bridge, meshid-init's real
// redirect, the proxies pinned to the servers' CPU like the explicit pair,
// the app the same echo server. Its baseline is direct-netns: a pod no proxy
// fronts calling the same app on a port the redirect skips, over the same
// bridge, so that what the namespaces and the bridge cost is not counted as
// the proxies'.
const (
	transparentNS = "tp"
	meshedPort    = 8080 // the app's port the redirect sends to the proxy
	skippedPort   = 8081 // the same app on a port meshid-init skips
	// The explicit listeners of the same proxies: web's outbound on its
	// loopback, db's inbound (which the injector skips from the redirect).
	explicitOutPort = 9000
	explicitInPort  = 8443
	echoImage       = "bench-echo"
)

// transparentPaths starts the node and its three pods (web and db
// injected, u not) and returns the direct-netns and transparent paths and
// a func that stops them. It needs root, ip(8) and a CA with --discovery.
func (r *runner) transparentPaths(ctx context.Context, ca *caProc) ([]*path, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	if err := r.serviceAccounts(ctx, transparentNS, dataplaneSAs); err != nil {
		return nil, nil, err
	}
	if _, err := r.kube.CoreV1().ConfigMaps(transparentNS).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "meshid-trust-bundle"}, Data: map[string]string{bundle.Key: string(r.pki.Anchor.CertPEM())},
	}, metav1.CreateOptions{}); err != nil {
		return nil, nil, err
	}
	n, err := node.New(ctx, node.Config{
		Client: r.kube, Name: "bench-node", CA: ca.addr, CAID: fmt.Sprintf("spiffe://%s/ns/%s/sa/meshid-ca", trustDomain, caNS),
		Binaries: map[string]string{
			"meshid-proxy": filepath.Join(r.bin, "meshid-proxy"), inject.InitName: filepath.Join(r.bin, "meshid-init"), echoImage: self,
		},
		Pin: func(container string) ([]string, []string) {
			if container != inject.ContainerName {
				return nil, nil // the apps and meshid-init run on the load CPUs
			}
			return []string{"taskset", "-c", r.server.CPUs}, []string{fmt.Sprintf("GOMAXPROCS=%d", r.server.GOMAXPROCS)}
		},
	})
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) ([]*path, func(), error) {
		err = fmt.Errorf("%w\n%s", err, n.Logs())
		n.Close()
		return nil, nil, err
	}
	run := func(name, sa string, injected bool, annotations map[string]string) (*node.Pod, error) {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: transparentNS, Name: name, Annotations: annotations},
			Spec: corev1.PodSpec{NodeName: "bench-node", ServiceAccountName: sa, Containers: []corev1.Container{{
				Name: "app", Image: echoImage, Command: []string{echoImage},
				Args: []string{"echo", fmt.Sprintf("--listen=:%d", meshedPort), fmt.Sprintf("--listen=:%d", skippedPort)},
			}}},
		}
		if injected {
			var err error
			if pod, err = inject.Pod(pod, nil, inject.Config{Image: "meshid-proxy", CA: "meshid-ca:8443", DefaultMode: "cluster-authenticated"}); err != nil {
				return nil, err
			}
			// The explicit pair's policy: cluster-authenticated, from a flag,
			// not from AuthorizationPolicies (this cluster has no CRD).
			proxy := &pod.Spec.Containers[len(pod.Spec.Containers)-1]
			proxy.Args = slices.DeleteFunc(proxy.Args, func(a string) bool { return a == "--policy-from-ca" })
		}
		created, err := r.kube.CoreV1().Pods(transparentNS).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			return nil, err
		}
		return n.Run(ctx, created)
	}
	// db's proxy also has an explicit inbound listener, and web's an
	// explicit outbound one to it: the explicit pair in the same pods, over
	// the same bridge.
	db, err := run("db", "sa-1", true, map[string]string{
		sidecar.SkipInboundPortsAnnotation: fmt.Sprint(skippedPort),
		inject.InboundAnnotation:           fmt.Sprintf("%d=%d", explicitInPort, meshedPort),
	})
	if err != nil {
		return fail(err)
	}
	web, err := run("web", "sa-0", true, map[string]string{
		inject.OutboundAnnotation: fmt.Sprintf("%d=%s;id=%s", explicitOutPort, net.JoinHostPort(db.IP.String(), fmt.Sprint(explicitInPort)), workloadID(transparentNS, 1)),
	})
	if err != nil {
		return fail(err)
	}
	u, err := run("u", "sa-0", false, nil)
	if err != nil {
		return fail(err)
	}
	baseline := &path{name: "direct-netns", echo: net.JoinHostPort(db.IP.String(), fmt.Sprint(skippedPort)), dial: u.DialContext}
	explicit := &path{name: "explicit-netns", echo: fmt.Sprintf("127.0.0.1:%d", explicitOutPort), dial: web.DialContext,
		procs: []*bench.Proc{bench.Attach("web-proxy", web.PID(inject.ContainerName)), bench.Attach("db-proxy", db.PID(inject.ContainerName))}}
	pair := &path{name: "transparent", echo: net.JoinHostPort(db.IP.String(), fmt.Sprint(meshedPort)), dial: web.DialContext,
		procs: []*bench.Proc{bench.Attach("web-proxy", web.PID(inject.ContainerName)), bench.Attach("db-proxy", db.PID(inject.ContainerName))}}
	stop := func() {
		// The pods' logs outlive the node, in the work folder (--keep).
		_ = os.WriteFile(filepath.Join(r.work, "node.log"), []byte(n.Logs()), 0o600)
		n.Close()
	}
	return []*path{baseline, explicit, pair}, stop, nil
}

// echoMain is `bench echo`: the app of the transparent pods, bench's echo
// server on every --listen address.
func echoMain(args []string) error {
	fs := newFlagSet("echo")
	var addrs listFlag
	fs.Var(&addrs, "listen", "address to serve on (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(addrs) == 0 {
		return errors.New("echo: give at least one --listen")
	}
	for _, a := range addrs {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return err
		}
		bench.ServeEcho(l)
	}
	select {}
}

// listFlag is a repeatable string flag.
type listFlag []string

var _ flag.Value = (*listFlag)(nil)

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// canRunTransparent says whether this machine can run the transparent
// pair, and if not why.
func canRunTransparent() error {
	if os.Geteuid() != 0 {
		return errors.New("not root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("no ip(8) (apt-get install iproute2)")
	}
	return nil
}

// The transparent pair's section of the report lies between these lines,
// so that --only transparent can rewrite it alone.
const (
	transparentBegin = "<!-- The transparent pair: written by make bench, or alone by meshid-bench --only transparent. -->"
	transparentEnd   = "<!-- End of the transparent pair. -->"
)

// transparentSection is the transparent pair against the explicit pair,
// from this run's figures; empty when it did not run.
func (r *runner) transparentSection() string {
	if len(r.fig("lat/transparent/p50").Runs) == 0 {
		return ""
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	med := func(name string) float64 { return r.fig(name).Median() }
	cell := r.cell
	base := map[string]string{"transparent": "direct-netns", "explicit-netns": "direct-netns", "meshid": "direct", "nginx": "direct"}
	added := func(p, q string) float64 { return med("lat/"+p+"/"+q) - med("lat/"+base[p]+"/"+q) }
	w("%s", transparentBegin)
	w("### Transparent pair")
	w("")
	w("Measured %s, %d runs of %s; every row of these tables comes from the same runs, the paths taking turns round by round. client in pod web → web's nftables redirect (meshid-init) → meshid-proxy --transparent (the original destination from SO_ORIGINAL_DST, who is behind it from its discovery cache, mTLS to db's SPIFFE ID) → the node's bridge → db's redirect → meshid-proxy --transparent (sniffs the meshid/1 ALPN, terminates, cluster-authenticated) → the app. Each pod is a network namespace on a bridge (test/node, the e2e harness), the pods injected by webhooks/inject, the proxies pinned to CPU %s with GOMAXPROCS=%d like the explicit pair, the app the same echo server. Its baseline, direct-netns, is a pod no proxy fronts calling the same app on a port the redirect skips, over the same bridge. explicit-netns is the explicit pair in the same pods and proxies (web's app dials web's `--outbound` on loopback, to db's `--inbound`, which the redirect skips): the like-for-like comparison. The added figures of explicit-netns and transparent are over direct-netns, those of meshid (the explicit pair on loopback) and nginx over direct.",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), r.runs, r.duration, r.server.CPUs, r.server.GOMAXPROCS)
	w("")
	w("| path | p50 (ms) | p99 (ms) | p99.9 (ms) | added p50 | added p99 | added p99.9 |")
	w("|---|---|---|---|---|---|---|")
	for _, p := range []string{"direct", "meshid", "nginx", "direct-netns", "explicit-netns", "transparent"} {
		if len(r.fig("lat/"+p+"/p50").Runs) == 0 {
			continue
		}
		cells := []string{"—", "—", "—"}
		if base[p] != "" {
			for i, q := range []string{"p50", "p99", "p999"} {
				cells[i] = fmt.Sprintf("%.3f", added(p, q))
			}
		}
		w("| %s | %s | %s | %s | %s | %s | %s |", p, cell("lat/"+p+"/p50"), cell("lat/"+p+"/p99"), cell("lat/"+p+"/p999"), cells[0], cells[1], cells[2])
	}
	w("")
	w("| proxies | CPU per request (µs) | context switches per request |")
	w("|---|---|---|")
	for _, p := range []string{"meshid", "nginx", "explicit-netns", "transparent"} {
		if len(r.fig("cpu/"+p).Runs) > 0 {
			w("| %s | %s | %s |", p, cell("cpu/"+p), cell("switches/"+p))
		}
	}
	w("")
	w("New connections: %d clients each open a connection, send one request, read the response and close, for %s per run; the transparent pair's include the outbound proxy's SO_ORIGINAL_DST and discovery lookup (answered from its cache) and the inbound proxy's sniffing, and the clients of direct-netns, explicit-netns and transparent enter a pod's network namespace for every dial (a thread switch the loopback paths do not pay):", connWorkers, r.duration)
	w("")
	w("| path | connections/s | vs raw crypto/tls |")
	w("|---|---|---|")
	for _, p := range []string{"raw", "direct", "meshid", "nginx", "direct-netns", "explicit-netns", "transparent"} {
		if len(r.fig("conns/"+p).Runs) > 0 {
			w("| %s | %s | %s |", p, cell("conns/"+p), bench.Ratio(med("conns/"+p), med("conns/raw")))
		}
	}
	w("")
	ratio := func(a, b float64) string {
		if a <= 0 || b <= 0 {
			return "not comparable (an added figure is not above its baseline's: the run was too noisy)"
		}
		return bench.Ratio(a, b)
	}
	for _, vs := range []string{"explicit-netns", "meshid"} {
		w("")
		w("Transparent against %s (goal: within 10 %%, ≤ 110 %%): added p50 %s, added p99 %s, CPU per request %s; new connections/s %s.", vs,
			ratio(added("transparent", "p50"), added(vs, "p50")), ratio(added("transparent", "p99"), added(vs, "p99")),
			bench.Ratio(med("cpu/transparent"), med("cpu/"+vs)), bench.Ratio(med("conns/transparent"), med("conns/"+vs)))
	}
	if load, err := os.ReadFile("/proc/loadavg"); err == nil {
		w("")
		w("The machine's load average when these were written (1, 5, 15 min; it has %d CPUs): %s. Other work on it lengthens every path's tail alike, so the tails compare only within one run.", onlineCPUs(), strings.Join(strings.Fields(string(load))[:3], ", "))
	}
	w("%s", transparentEnd)
	return b.String()
}

// splice puts section, which begins with the line begin and ends with end,
// in place of the same section in report: between its lines, else before
// the notes, else before the hand-written part. what names the section in
// errors.
func splice(report, section, begin, end, what string) (string, error) {
	if section == "" {
		return "", fmt.Errorf("%s was not measured", what)
	}
	if i := strings.Index(report, begin); i >= 0 {
		if j := strings.Index(report[i:], end); j >= 0 {
			return report[:i] + section + strings.TrimPrefix(report[i+j+len(end):], "\n"), nil
		}
	}
	for _, at := range []string{"## Notes from this run", handWritten} {
		if i := strings.Index(report, at); i >= 0 {
			return report[:i] + section + "\n" + report[i:], nil
		}
	}
	return "", fmt.Errorf("no place for %s: not a report make bench wrote", what)
}
