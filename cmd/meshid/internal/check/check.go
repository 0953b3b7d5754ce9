package check

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/utils/clock"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/certinfo"
	"github.com/meshid/meshid/cmd/meshid/internal/output"
	"github.com/meshid/meshid/rotation/health"
)

// Options are check's flags, and what tests replace.
type Options struct {
	// Cluster is the kubeconfig file and context; empty means $KUBECONFIG,
	// ~/.kube/config or the pod's configuration.
	Cluster kube.Target
	// Namespace of meshid-ca, the bundle and the issuer.
	Namespace string
	// Bundle is the trust-bundle ConfigMap; Issuer the issuer Secret.
	Bundle, Issuer string
	// Deployment is the meshid-ca Deployment; empty skips its check.
	Deployment string
	// TrustDomain of the proxies' certificates.
	TrustDomain string
	// Proxies are admin addresses (host:port) whose /identity to check.
	Proxies []string
	// WarnWithin: an anchor expiring sooner is a warning.
	WarnWithin time.Duration
	// IssuerWarnWithin: an issuer expiring sooner fails; 0 means
	// cert-manager's renewBefore, else a third of its lifetime.
	IssuerWarnWithin time.Duration
	// FailOnWarning makes warnings exit 1 too.
	FailOnWarning bool
	// Watch checks again every Interval and prints the rows that change,
	// until the context ends.
	Watch    bool
	Interval time.Duration
	// Output is "table" or "json".
	Output string

	// Connect builds the Kubernetes clients; nil means kube.NewClients.
	Connect kube.Connect
	// Clock tells the time and paces --watch; nil means the real clock.
	Clock clock.WithTicker
}

// Validate refuses flags that cannot work, as usage errors.
func (o *Options) Validate() error {
	if o.Output != "table" && o.Output != "json" {
		return cli.Usagef("-o %q: use table or json", o.Output)
	}
	if _, err := spiffeid.TrustDomainFromString(o.TrustDomain); err != nil {
		return cli.Usagef("--trust-domain %q: %v", o.TrustDomain, err)
	}
	if o.Interval <= 0 {
		return cli.Usagef("--interval must be positive")
	}
	return nil
}

// ErrProblems makes check exit 1 without printing an extra error line: the
// rows already said what is wrong.
var ErrProblems = &cli.SilentError{Err: errors.New("check: problems found")}

// Run checks once and prints the report, returning ErrProblems on a
// failure (or a warning, with FailOnWarning); with Watch it prints whenever
// a row's status changes, until ctx ends, and returns nil.
func Run(ctx context.Context, o *Options, out io.Writer) error {
	connect, clk := o.Connect, o.Clock
	if connect == nil {
		connect = kube.NewClients
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	c, err := connect(o.Cluster, "meshid-check")
	if err != nil {
		return err
	}
	r := reader{o: o, c: c}
	if !o.Watch {
		t := clk.Now()
		rep := r.report(ctx, t)
		if err := printReport(out, o, rep, t); err != nil {
			return err
		}
		if w := rep.Worst(); w == health.Fail || (w == health.Warn && o.FailOnWarning) {
			return ErrProblems
		}
		return nil
	}
	last := map[string]health.Status{}
	tick := clk.NewTicker(o.Interval)
	defer tick.Stop()
	for {
		t := clk.Now()
		rep := r.report(ctx, t)
		if err := printChanges(out, o, rep, t, last); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C():
		}
	}
}

// Report reads the cluster (and o.Proxies) with c and runs every check as
// of now: what check prints, and what the dashboard's trust page shows.
func Report(ctx context.Context, o *Options, c *kube.Clients, now time.Time) *health.Report {
	return reader{o: o, c: c}.report(ctx, now)
}

func (r reader) report(ctx context.Context, now time.Time) *health.Report {
	return health.Run(r.input(ctx, now))
}

// document is the JSON of one report: -o json prints one, --watch -o json
// one per line whenever a row's status changes.
type document struct {
	At time.Time `json:"at"`
	*health.Report
	Status health.Status `json:"status"`
}

// printChanges prints, for --watch, the rows whose status differs from
// last (every row the first time) and records them; with -o json, the
// whole report as one line when any did.
func printChanges(out io.Writer, o *Options, rep *health.Report, t time.Time, last map[string]health.Status) error {
	var changed []health.Row
	seen := map[string]bool{}
	for _, row := range rep.Rows {
		seen[row.Check] = true
		if st, ok := last[row.Check]; !ok || st != row.Status {
			changed = append(changed, row)
			last[row.Check] = row.Status
		}
	}
	for check := range last {
		if !seen[check] {
			delete(last, check) // a row that went away prints again when it comes back
		}
	}
	if len(changed) == 0 {
		return nil
	}
	if o.Output == "json" {
		data, err := json.Marshal(document{At: t, Report: rep, Status: rep.Worst()})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "%s\n", data)
		return err
	}
	for _, row := range changed {
		if _, err := fmt.Fprintf(out, "%s  %-5s %s: %s\n", t.UTC().Format(time.RFC3339), row.Status, row.Check, row.Detail); err != nil {
			return err
		}
	}
	return nil
}

func printReport(out io.Writer, o *Options, rep *health.Report, now time.Time) error {
	if o.Output == "json" {
		return output.JSON(out, document{At: now, Report: rep, Status: rep.Worst()})
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tEXPIRES IN\tDETAIL")
	for _, r := range rep.Rows {
		exp := "-"
		if r.Expires != nil {
			exp = certinfo.TimeLeft(*r.Expires, now)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Check, strings.ToUpper(string(r.Status)), exp, r.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rep.Rows {
		if r.Hint != "" && (r.Status == health.Warn || r.Status == health.Fail) {
			fmt.Fprintf(out, "hint: %s: %s\n", r.Check, r.Hint)
		}
	}
	switch {
	case !rep.Outage.IsZero():
		fmt.Fprintf(out, "\nTime to outage: %s (%s, at %s)\n", certinfo.TimeLeft(rep.Outage, now), rep.OutageWhat, rep.Outage.UTC().Format(time.RFC3339))
	case rep.OutageWhat != "":
		fmt.Fprintf(out, "\nTime to outage: %s\n", rep.OutageWhat)
	}
	fmt.Fprintf(out, "Status: %s\n", strings.ToUpper(string(rep.Worst())))
	return nil
}
