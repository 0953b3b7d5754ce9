package dashboard

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"

	"github.com/meshid/meshid/api/policy/v1alpha1"
	"github.com/meshid/meshid/ca/policies"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/policy"
	"github.com/meshid/meshid/sidecar"
	"github.com/meshid/meshid/webhooks/inject"
)

// matrix is who may call whom in one namespace: a row per caller, a
// column per port of a meshed pod, each cell the decision of the port's
// compiled policy (policy.Port.Authorize, what the proxy runs at each
// handshake).
type matrix struct {
	Columns []column
	Rows    []matrixRow
	// Notes say what the matrix leaves out, and why (pods not meshed,
	// policies that do not compile).
	Notes []string
}

// column is one inbound port of one meshed pod.
type column struct {
	Pod  string
	Port int
	Mode policy.Mode
	// Policies are the AuthorizationPolicies that name the port for the
	// pod; none means the pod's default mode applies.
	Policies []string
}

// matrixRow is one caller's decisions, in the order of the columns.
type matrixRow struct {
	// Caller is a SPIFFE ID, or plainCaller.
	Caller string
	Cells  []cell
}

// cell is one decision: Verdict is "allow" or "deny"; Why says what
// decided it.
type cell struct {
	Verdict, Why string
}

// plainCaller is the row of callers with no certificate (plain TCP).
const plainCaller = "plain TCP (no certificate)"

// proxyArgs is what the matrix reads of a pod's meshid-proxy container.
type proxyArgs struct {
	defaultMode  policy.Mode
	policyFile   string
	policyFromCA bool
	transparent  bool
	inbound      []string
	trustDomain  string
}

// parseProxyArgs reads the flags of the proxy's arguments that decide its
// policy; the others are ignored.
func parseProxyArgs(args []string) (proxyArgs, error) {
	var a proxyArgs
	fs := pflag.NewFlagSet(inject.ContainerName, pflag.ContinueOnError)
	fs.ParseErrorsAllowlist.UnknownFlags = true
	fs.SetOutput(io.Discard)
	fs.StringVar((*string)(&a.defaultMode), "default-mode", "", "")
	fs.StringVar(&a.policyFile, "policy", "", "")
	fs.BoolVar(&a.policyFromCA, "policy-from-ca", false, "")
	fs.BoolVar(&a.transparent, "transparent", false, "")
	fs.StringArrayVar(&a.inbound, "inbound", nil, "")
	fs.StringVar(&a.trustDomain, "trust-domain", identity.DefaultTrustDomain, "")
	err := fs.Parse(args)
	return a, err
}

// matrixOf computes the matrix of namespace ns from its pods, service
// accounts and AuthorizationPolicies, as each pod's proxy would decide:
// the pod's policy file is what the CA sends it (policies.FileFor, with
// the proxy's --default-mode), parsed as the proxy parses it, and each
// cell is that port's Authorize of the caller.
func matrixOf(td spiffeid.TrustDomain, ns string, pods []corev1.Pod, sas []corev1.ServiceAccount, aps []v1alpha1.AuthorizationPolicy) matrix {
	var m matrix
	callers := map[spiffeid.ID]bool{}
	for _, sa := range sas {
		if id, err := (identity.ServiceAccount{Namespace: ns, Name: sa.Name}).ID(td); err == nil {
			callers[id] = true
		}
	}
	for _, ap := range aps {
		for _, r := range ap.Spec.Allow {
			if id, ok := named(r, td); ok {
				callers[id] = true
			}
		}
	}
	type decided struct {
		col  column
		port *policy.Port
	}
	var cols []decided
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return cmp.Compare(a.Name, b.Name) })
	for i := range pods {
		pod := &pods[i]
		proxy := container(pod, inject.ContainerName)
		if proxy == nil {
			m.Notes = append(m.Notes, fmt.Sprintf("pod %s is not meshed (no %s container): no proxy checks its callers", pod.Name, inject.ContainerName))
			continue
		}
		args, err := parseProxyArgs(proxy.Args)
		if err != nil {
			m.Notes = append(m.Notes, fmt.Sprintf("pod %s: its proxy's arguments do not parse (%v)", pod.Name, err))
			continue
		}
		if args.trustDomain != td.Name() {
			m.Notes = append(m.Notes, fmt.Sprintf("pod %s: its proxy is of trust domain %s, not %s (--trust-domain)", pod.Name, args.trustDomain, td.Name()))
			continue
		}
		var file policy.File
		switch {
		case args.policyFromCA:
			file = policies.FileFor(pod, aps, args.defaultMode)
		case args.policyFile != "":
			m.Notes = append(m.Notes, fmt.Sprintf("pod %s: its proxy reads its policy from the file %s (--policy), which the dashboard cannot read; AuthorizationPolicies do not apply to it", pod.Name, args.policyFile))
			continue
		default:
			file = policy.File{Default: args.defaultMode}
		}
		data, err := file.Marshal()
		var pol *policy.Policy
		if err == nil {
			pol, err = policy.Parse(data, td)
		}
		if err != nil {
			m.Notes = append(m.Notes, fmt.Sprintf("pod %s: its AuthorizationPolicies do not compile, so its proxy refuses them and keeps the last policy it had: %v", pod.Name, err))
			continue
		}
		for _, n := range inboundPorts(pod, args, pol) {
			port := pol.For(n)
			cols = append(cols, decided{column{Pod: pod.Name, Port: n, Mode: port.Mode, Policies: naming(pod, aps, n)}, port})
		}
	}
	ids := make([]spiffeid.ID, 0, len(callers))
	for id := range callers {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b spiffeid.ID) int { return cmp.Compare(a.String(), b.String()) })
	for _, c := range cols {
		m.Columns = append(m.Columns, c.col)
	}
	for _, id := range ids {
		row := matrixRow{Caller: id.String()}
		for _, c := range cols {
			row.Cells = append(row.Cells, decide(c.port, id, td))
		}
		m.Rows = append(m.Rows, row)
	}
	plain := matrixRow{Caller: plainCaller}
	for _, c := range cols {
		if c.port.Mode == policy.AllUnauthenticated {
			plain.Cells = append(plain.Cells, cell{"allow", "mode " + string(c.port.Mode) + " also accepts plain TCP"})
		} else {
			plain.Cells = append(plain.Cells, cell{"deny", "mode " + string(c.port.Mode) + " accepts only mTLS peers"})
		}
	}
	if len(cols) > 0 {
		m.Rows = append(m.Rows, plain)
	}
	return m
}

// decide is port's decision on id, with the reason the proxy would log:
// a peer of another trust domain is decided as the proxy decides one that
// verified against its federated bundle.
func decide(port *policy.Port, id spiffeid.ID, td spiffeid.TrustDomain) cell {
	authorize := port.Authorize
	if !id.MemberOf(td) {
		authorize = port.AuthorizeForeign
	}
	err := authorize(id)
	var denied *policy.DeniedError
	switch {
	case err == nil && port.HasRequestRules():
		return requestCell(port, id)
	case err == nil:
		return cell{"allow", "mode " + string(port.Mode) + " allows it"}
	case errors.As(err, &denied):
		return cell{"deny", denied.Reason}
	}
	return cell{"deny", err.Error()}
}

// named is the one identity a rule names (id or serviceAccount), if it
// names one: of our trust domain or of a federated one.
func named(r policy.Rule, td spiffeid.TrustDomain) (spiffeid.ID, bool) {
	if r.ID != "" {
		id, err := spiffeid.FromString(r.ID)
		return id, err == nil
	}
	if ns, name, ok := strings.Cut(r.ServiceAccount, "/"); ok {
		id, err := identity.ServiceAccount{Namespace: ns, Name: name}.ID(td)
		return id, err == nil
	}
	return spiffeid.ID{}, false
}

// inboundPorts are the ports on which pod's proxy checks its callers:
// with --transparent, its containers' TCP ports less the skipped ones;
// its explicit --inbound listeners; and every port its policy names.
func inboundPorts(pod *corev1.Pod, args proxyArgs, pol *policy.Policy) []int {
	set := map[int]bool{}
	if args.transparent {
		skip := map[string]bool{}
		for _, p := range strings.Split(pod.Annotations[sidecar.SkipInboundPortsAnnotation], ",") {
			skip[strings.TrimSpace(p)] = true
		}
		for _, c := range pod.Spec.Containers {
			if c.Name == inject.ContainerName {
				continue
			}
			for _, p := range c.Ports {
				if (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) && !skip[strconv.Itoa(int(p.ContainerPort))] {
					set[int(p.ContainerPort)] = true
				}
			}
		}
	}
	for _, in := range args.inbound {
		listen, _, _ := strings.Cut(in, "=")
		if _, p, err := net.SplitHostPort(listen); err == nil {
			if n, err := strconv.Atoi(p); err == nil {
				set[n] = true
			}
		}
	}
	for _, n := range pol.Ports() {
		set[n] = true
	}
	delete(set, sidecar.AdminPort)
	out := make([]int, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// naming lists the AuthorizationPolicies that select pod for port n.
func naming(pod *corev1.Pod, aps []v1alpha1.AuthorizationPolicy, n int) []string {
	var out []string
	for _, ap := range aps {
		if int(ap.Spec.Port) == n && len(policies.FileFor(pod, []v1alpha1.AuthorizationPolicy{ap}, "").Ports) > 0 {
			out = append(out, ap.Name)
		}
	}
	slices.Sort(out)
	return out
}

func container(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	return nil
}

// noRequest matches no request rule's method, path, host or gRPC call, so
// that Decide on it says only whether a rule names the peer.
var noRequest = policy.Request{Method: "\x00", Path: "\x00", Host: "\x00"}

// requestCell is the verdict on id of a port whose request rules decide
// each request, by the proxy's own Decide: deny (or audit) when no rule
// names id, allow when a rule allows id every request, and otherwise
// "requests": some requests, which `meshid policy explain` tells apart.
func requestCell(port *policy.Port, id spiffeid.ID) cell {
	r := noRequest
	r.Peer = id
	d := port.Decide(&r)
	switch {
	case d.Allowed && !d.Audited:
		return cell{"allow", "request rule " + d.Rule + " of " + d.Policy + " allows it every request"}
	case d.Reason == policy.ReasonPeerNotNamed && d.Audited:
		return cell{"audit", "no request rule names it: every request is let through and counted (audit mode)"}
	case d.Reason == policy.ReasonPeerNotNamed:
		return cell{"deny", "no request rule names it: every request gets 403 or PERMISSION_DENIED"}
	case d.Audited:
		return cell{"audit", "request rules of " + d.Policy + " name it, in audit mode: what they do not allow is let through and counted"}
	}
	return cell{"requests", "request rules of " + d.Policy + " decide each request; meshid policy explain --from " + id.String() + " --method M --path P tells"}
}
