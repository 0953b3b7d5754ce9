package explain

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/meshid/meshid/api/policy/v1alpha1"
	"github.com/meshid/meshid/ca/policies"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/output"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/policy"
)

// Options are `meshid policy explain`'s flags.
type Options struct {
	// Connect builds the Kubernetes clients, for To; Cluster is the
	// kubeconfig file and context.
	Connect kube.Connect
	Cluster kube.Target
	// PolicyFile is a proxy's --policy file; empty means the cluster's
	// AuthorizationPolicies that select the pod To in Namespace.
	PolicyFile    string
	To, Namespace string
	// DefaultMode is the proxy's --default-mode, for ports no policy
	// names; empty means deny.
	DefaultMode string
	TrustDomain string
	// From is the caller: a SPIFFE ID, or NAMESPACE/NAME of a service
	// account; "plain" means plain TCP (no certificate).
	From string
	Port int
	// Method, Path and Host are the HTTP request; GRPC is SERVICE/METHOD
	// instead. All empty: the connection only.
	Method, Path, Host, GRPC string
	// Output is "table" or "json".
	Output string
}

// Validate checks the flags, as usage errors.
func (o *Options) Validate() error {
	switch {
	case o.From == "":
		return cli.Usagef("--from is required: a SPIFFE ID, NAMESPACE/NAME, or plain")
	case o.Port < 1 || o.Port > 65535:
		return cli.Usagef("--port is required: the inbound listen port (1-65535)")
	case (o.PolicyFile == "") == (o.To == ""):
		return cli.Usagef("give one of --to POD (the cluster's live policies) or --policy FILE (a proxy's policy file)")
	case o.GRPC != "" && (o.Method != "" || o.Path != ""):
		return cli.Usagef("--grpc SERVICE/METHOD excludes --method and --path (a gRPC call is a POST to /SERVICE/METHOD)")
	case o.GRPC != "" && strings.Count(o.GRPC, "/") != 1:
		return cli.Usagef("--grpc %q: want SERVICE/METHOD, as payments.v1.Charge/Refund", o.GRPC)
	case o.Output != "table" && o.Output != "json":
		return cli.Usagef("-o %q: want table or json", o.Output)
	}
	if o.Method != "" && o.Path == "" {
		o.Path = "/"
	}
	if o.Path != "" && o.Method == "" {
		o.Method = "GET"
	}
	return nil
}

// Result is what explain prints.
type Result struct {
	From   string `json:"from"`
	Port   int    `json:"port"`
	Source string `json:"source"`
	// Request is empty for a connection only.
	Request        string `json:"request,omitempty"`
	NormalizedPath string `json:"normalized_path,omitempty"`
	RequestRules   bool   `json:"request_rules"`
	Allowed        bool   `json:"allowed"`
	Audited        bool   `json:"audited,omitempty"`
	Policy         string `json:"policy,omitempty"`
	Rule           string `json:"rule,omitempty"`
	Reason         string `json:"reason"`
	Why            string `json:"why"`
}

// Run explains one decision; it exits 1 (a SilentError) when the caller
// would be denied.
func Run(ctx context.Context, o *Options, out io.Writer) error {
	td, err := spiffeid.TrustDomainFromString(o.TrustDomain)
	if err != nil {
		return cli.Usagef("--trust-domain: %v", err)
	}
	peer, err := caller(o.From, td)
	if err != nil {
		return err
	}
	pol, source, err := load(ctx, o, td)
	if err != nil {
		return err
	}
	r := Decide(pol.For(o.Port), peer, o)
	r.Source = source
	if o.Output == "json" {
		err = output.JSON(out, r)
	} else {
		err = table(out, r)
	}
	if err != nil {
		return err
	}
	if !r.Allowed {
		return &cli.SilentError{Err: errors.New(r.Why)}
	}
	return nil
}

// Decide is the proxy's decision (policy.Port.Check) on o's request from
// peer (zero: plain TCP).
func Decide(port *policy.Port, peer spiffeid.ID, o *Options) Result {
	from := "plain TCP"
	if !peer.IsZero() {
		from = peer.String()
	}
	r := Result{From: from, Port: o.Port, RequestRules: port.HasRequestRules()}
	call := policy.Call{Peer: peer, Method: o.Method, EscapedPath: o.Path, Host: o.Host}
	if o.GRPC != "" {
		call.Method, call.EscapedPath, call.GRPC = "POST", "/"+o.GRPC, true
		r.Request = "gRPC " + o.GRPC
	} else if o.Path != "" {
		r.Request = o.Method + " " + o.Path
		if o.Host != "" {
			r.Request += " (host " + o.Host + ")"
		}
	}
	if r.Request == "" || !port.HasRequestRules() {
		// The connection alone (or a byte pipe: requests are not looked at).
		if err := port.Admits(peer); err != nil {
			r.Reason, r.Why = policy.ReasonPeerDenied, "denied: "+err.Error()
			return r
		}
		r.Allowed, r.Reason = true, policy.ReasonAllowed
		r.Why = fmt.Sprintf("allowed: the connection rules (mode %s) admit the caller", port.Mode)
		if !port.HasRequestRules() {
			r.Why += "; the port has no request rules, so every request passes"
		}
		return r
	}
	d, path, err := port.Check(call)
	r.NormalizedPath = path
	r.Allowed, r.Audited, r.Policy, r.Rule, r.Reason, r.Why = d.Allowed, d.Audited, d.Policy, d.Rule, d.Reason, d.Why()
	if err != nil {
		r.Why = "denied: " + err.Error()
	}
	return r
}

func caller(from string, td spiffeid.TrustDomain) (spiffeid.ID, error) {
	switch {
	case from == "plain":
		return spiffeid.ID{}, nil
	case strings.HasPrefix(from, "spiffe://"):
		id, err := spiffeid.FromString(from)
		if err != nil {
			return id, cli.Usagef("--from %q: %v", from, err)
		}
		return id, nil
	}
	ns, name, ok := strings.Cut(from, "/")
	if !ok {
		return spiffeid.ID{}, cli.Usagef("--from %q: want a SPIFFE ID, NAMESPACE/NAME or plain", from)
	}
	id, err := identity.ServiceAccount{Namespace: ns, Name: name}.ID(td)
	if err != nil {
		return id, cli.Usagef("--from %q: %v", from, err)
	}
	return id, nil
}

// load compiles the policy the proxy of To (or the file) enforces.
func load(ctx context.Context, o *Options, td spiffeid.TrustDomain) (*policy.Policy, string, error) {
	if o.PolicyFile != "" {
		data, err := os.ReadFile(o.PolicyFile)
		if err != nil {
			return nil, "", fmt.Errorf("explain: %w", err)
		}
		p, err := policy.Parse(data, td)
		if err != nil {
			return nil, "", fmt.Errorf("explain: --policy %s: %w", o.PolicyFile, err)
		}
		return p, "file " + o.PolicyFile, nil
	}
	c, err := o.Connect(o.Cluster, "meshid-policy-explain")
	if err != nil {
		return nil, "", err
	}
	pod, err := c.Kube.CoreV1().Pods(o.Namespace).Get(ctx, o.To, metav1.GetOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("explain: pod %s/%s: %w", o.Namespace, o.To, err)
	}
	all, err := list(ctx, c, o.Namespace)
	if err != nil {
		return nil, "", err
	}
	names := selecting(all, pod)
	data, err := policies.FileFor(pod, all, policy.Mode(o.DefaultMode)).Marshal()
	if err != nil {
		return nil, "", fmt.Errorf("explain: %w", err)
	}
	p, err := policy.Parse(data, td)
	if err != nil {
		return nil, "", fmt.Errorf("explain: the policies selecting %s/%s do not compile (the proxy keeps its last good policy): %w", o.Namespace, o.To, err)
	}
	source := fmt.Sprintf("cluster: pod %s/%s, %d AuthorizationPolicies select it", o.Namespace, o.To, len(names))
	if len(names) > 0 {
		source += " (" + strings.Join(names, ", ") + ")"
	}
	return p, source, nil
}

// list lists the AuthorizationPolicies of ns.
func list(ctx context.Context, c *kube.Clients, ns string) ([]v1alpha1.AuthorizationPolicy, error) {
	list, err := c.Dynamic.Resource(v1alpha1.Resource).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("explain: list AuthorizationPolicies in %s: %w", ns, err)
	}
	out := make([]v1alpha1.AuthorizationPolicy, 0, len(list.Items))
	for _, item := range list.Items {
		var ap v1alpha1.AuthorizationPolicy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(item.Object, &ap); err != nil {
			return nil, fmt.Errorf("explain: AuthorizationPolicy %s/%s does not decode: %w", ns, item.GetName(), err)
		}
		out = append(out, ap)
	}
	return out, nil
}

// selecting names those of aps that select pod (policies.FileFor's choice).
func selecting(aps []v1alpha1.AuthorizationPolicy, pod *corev1.Pod) []string {
	var names []string
	for _, ap := range aps {
		if len(policies.FileFor(pod, []v1alpha1.AuthorizationPolicy{ap}, "").Ports) > 0 {
			names = append(names, ap.Name)
		}
	}
	return names
}

func table(out io.Writer, r Result) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "FROM\t%s\n", r.From)
	fmt.Fprintf(tw, "PORT\t%d\n", r.Port)
	fmt.Fprintf(tw, "POLICY\t%s\n", r.Source)
	if r.Request != "" {
		fmt.Fprintf(tw, "REQUEST\t%s\n", r.Request)
	}
	if r.NormalizedPath != "" {
		fmt.Fprintf(tw, "MATCHED AS\t%s\n", r.NormalizedPath)
	}
	mark := "✔"
	if !r.Allowed {
		mark = "×"
	}
	fmt.Fprintf(tw, "VERDICT\t%s %s\n", mark, r.Why)
	return tw.Flush()
}
