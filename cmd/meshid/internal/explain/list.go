package explain

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshid/meshid/api/policy/v1alpha1"
	"github.com/meshid/meshid/ca/policies"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/output"
	"github.com/meshid/meshid/policy"
)

// ListOptions are `meshid policy list`'s flags.
type ListOptions struct {
	Connect   kube.Connect
	Cluster   kube.Target
	Namespace string
	// DefaultMode is the proxies' --default-mode; empty means deny.
	DefaultMode string
	Output      string
}

// Validate checks the flags, as usage errors.
func (o *ListOptions) Validate() error {
	if o.Output != "table" && o.Output != "json" {
		return cli.Usagef("-o %q: want table or json", o.Output)
	}
	return policy.Mode(o.DefaultMode).Validate()
}

// Row is one port of one pod, and one of its request rules (none: Rule
// is empty and every request of an admitted caller passes).
type Row struct {
	Pod     string   `json:"pod"`
	Port    int      `json:"port"`
	Mode    string   `json:"mode"`
	Allow   []string `json:"allow,omitempty"`
	Policy  string   `json:"policy,omitempty"`
	Rule    string   `json:"rule,omitempty"`
	Enforce string   `json:"enforcement,omitempty"`
	From    []string `json:"from,omitempty"`
	Hosts   []string `json:"hosts,omitempty"`
	Matches []string `json:"matches,omitempty"`
}

// List prints, per pod of the namespace and port its policies name, who
// may connect and what they may ask, from the live objects merged as
// meshid-ca merges them.
func List(ctx context.Context, o *ListOptions, out io.Writer) error {
	c, err := o.Connect(o.Cluster, "meshid-policy-list")
	if err != nil {
		return err
	}
	pods, err := c.Kube.CoreV1().Pods(o.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("explain: list pods in %s: %w", o.Namespace, err)
	}
	aps, err := list(ctx, c, o.Namespace)
	if err != nil {
		return err
	}
	items := slices.Clone(pods.Items)
	slices.SortFunc(items, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	rows := []Row{}
	for i := range items {
		rows = append(rows, Rows(items[i].Name, policies.FileFor(&items[i], aps, policy.Mode(o.DefaultMode)))...)
	}
	if o.Output == "json" {
		return output.JSON(out, rows)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tPORT\tMODE\tALLOW\tRULE\tFROM\tREQUESTS")
	for _, r := range rows {
		rule, reqs := "-", "any"
		if r.Rule != "" {
			rule = r.Policy + "/" + r.Rule
			if r.Enforce == string(policy.Audit) {
				rule += " (audit)"
			}
			reqs = orAny(strings.Join(r.Matches, ", "))
			if len(r.Hosts) > 0 {
				reqs += " on " + strings.Join(r.Hosts, ", ")
			}
		}
		from := "-"
		switch {
		case r.Rule != "" && len(r.From) == 0:
			from = "any admitted"
		case r.Rule != "":
			from = strings.Join(r.From, ", ")
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", r.Pod, r.Port, r.Mode, orAny(strings.Join(r.Allow, ", ")), rule, from, reqs)
	}
	fmt.Fprintf(tw, "(other ports: mode %s)\n", policy.Mode(o.DefaultMode).OrDeny())
	return tw.Flush()
}

func orAny(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Rows flattens a pod's merged policy file into rows.
func Rows(pod string, f policy.File) []Row {
	var rows []Row
	for _, pf := range f.Ports {
		base := Row{Pod: pod, Port: pf.Port, Mode: string(pf.Mode.OrDeny())}
		for _, a := range pf.Allow {
			base.Allow = append(base.Allow, peerText(a))
		}
		if len(pf.Requests) == 0 {
			rows = append(rows, base)
			continue
		}
		for _, rr := range pf.Requests {
			r := base
			r.Policy, r.Rule, r.Enforce, r.Hosts = rr.Policy, rr.Name, string(policy.Enforce), rr.Hosts
			if rr.Mode != "" {
				r.Enforce = rr.Mode
			}
			for _, f := range rr.From {
				r.From = append(r.From, peerText(f))
			}
			for _, m := range rr.Matches {
				r.Matches = append(r.Matches, matchText(m))
			}
			rows = append(rows, r)
		}
	}
	return rows
}

func peerText(r policy.Rule) string {
	switch {
	case r.ID != "":
		return r.ID
	case r.ServiceAccount != "":
		return "sa " + r.ServiceAccount
	case r.Namespace != "":
		return "ns " + r.Namespace
	}
	return r.Pattern
}

func matchText(m v1alpha1.RequestMatch) string {
	if m.GRPC != nil {
		return "gRPC " + orStar(m.GRPC.Service) + "/" + orStar(m.GRPC.Method)
	}
	s := orStar(m.Method)
	if m.Path != nil {
		if m.Path.Type == policy.PathExact {
			s += " " + m.Path.Value
		} else {
			s += " " + strings.TrimSuffix(m.Path.Value, "/") + "/*"
		}
	}
	return s
}

func orStar(s string) string {
	if s == "" {
		return "*"
	}
	return s
}
