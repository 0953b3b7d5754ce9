package workload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/meshid/meshid/api/workload/v1alpha1"
	"github.com/meshid/meshid/ca/external"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/output"
	"github.com/meshid/meshid/identity"
)

// Options are the flags of meshid workload.
type Options struct {
	// Namespace and Name of the ExternalWorkload (Name empty for list).
	Namespace, Name string
	// AllNamespaces lists every namespace's.
	AllNamespaces bool
	// TTL is how long a join token is accepted.
	TTL time.Duration
	// TrustDomain, CA and CAID go into the printed meshid-proxy command
	// (CAID empty: the trust domain's meshid/meshid-ca).
	TrustDomain, CA, CAID string
	// ControlPlane is meshid's namespace, where the trust bundle is.
	ControlPlane string
	// TokenFile, BundleFile, StateDir and Binary are the paths on the
	// machine the printed command uses.
	TokenFile, BundleFile, StateDir, Binary string
	// ProxyArgs are more meshid-proxy flags for the printed command
	// (listeners, policy).
	ProxyArgs []string
	// Systemd prints a systemd unit instead of a shell command.
	Systemd bool
	// Output is "text" or "json".
	Output string

	Cluster kube.Target
	// Connect builds the clients; nil means kube.NewClients.
	Connect kube.Connect
	// Clock tells the time; nil means the real clock.
	Clock clock.PassiveClock
}

// Validate checks the flags, as usage errors.
func (o *Options) Validate() error {
	if o.Output != "text" && o.Output != "json" {
		return cli.Usagef("-o %q: use text or json", o.Output)
	}
	if o.TTL <= 0 || o.TTL > 24*time.Hour {
		return cli.Usagef("--ttl %s: a join token lives more than 0 and at most 24h (it is a bearer secret until used)", o.TTL)
	}
	if _, err := spiffeid.TrustDomainFromString(o.TrustDomain); err != nil {
		return cli.Usagef("--trust-domain %q: %v", o.TrustDomain, err)
	}
	return nil
}

func (o *Options) now() time.Time {
	if o.Clock == nil {
		return clock.RealClock{}.Now()
	}
	return o.Clock.Now()
}

func (o *Options) store() (*external.Store, error) {
	connect := o.Connect
	if connect == nil {
		connect = kube.NewClients
	}
	c, err := connect(o.Cluster, "meshid-workload")
	if err != nil {
		return nil, err
	}
	return external.NewStore(c.Dynamic), nil
}

// get reads the object, or says how to make it.
func get(ctx context.Context, s *external.Store, ns, name string) (*v1alpha1.ExternalWorkload, error) {
	w, err := s.Get(ctx, ns, name)
	if err != nil {
		return nil, fmt.Errorf("workload: %w (is the ExternalWorkload CRD installed? meshid install --external-workloads)", err)
	}
	if w == nil {
		return nil, fmt.Errorf("workload: there is no ExternalWorkload %s/%s: create it first (docs/expansion.md has an example), then join it", ns, name)
	}
	return w, nil
}

// update reads the object, changes it and writes its status, again if it
// changed in between (once).
func update(ctx context.Context, s *external.Store, ns, name string, change func(*v1alpha1.ExternalWorkload) error) (*v1alpha1.ExternalWorkload, error) {
	for attempt := 0; ; attempt++ {
		w, err := get(ctx, s, ns, name)
		if err != nil {
			return nil, err
		}
		if err := change(w); err != nil {
			return nil, err
		}
		_, err = s.UpdateStatus(ctx, w)
		if errors.Is(err, external.ErrChanged) && attempt == 0 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("workload: %w", err)
		}
		return w, nil
	}
}

// Joined is what join prints with -o json.
type Joined struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	SPIFFEID  string    `json:"spiffe_id"`
	Token     string    `json:"token"`
	Expires   time.Time `json:"expires"`
	// Command is the meshid-proxy command line, one argument each.
	Command []string `json:"command"`
	// Unit is the systemd unit, with --systemd.
	Unit string `json:"unit,omitempty"`
}

// Join makes a new join token for the ExternalWorkload (replacing a
// pending one) and prints how to use it.
func Join(ctx context.Context, o *Options, out io.Writer) error {
	s, err := o.store()
	if err != nil {
		return err
	}
	now := o.now()
	var token string
	var sa identity.ServiceAccount
	w, err := update(ctx, s, o.Namespace, o.Name, func(w *v1alpha1.ExternalWorkload) error {
		if w.DeletionTimestamp != nil {
			return fmt.Errorf("workload: ExternalWorkload %s/%s is being deleted", o.Namespace, o.Name)
		}
		sa = identity.ServiceAccount{Namespace: w.Namespace, Name: w.Spec.ServiceAccount}
		var join *v1alpha1.JoinToken
		var err error
		token, join, err = external.NewToken(now.Add(o.TTL))
		w.Status.Join = join
		return err
	})
	if err != nil {
		return err
	}
	td := spiffeid.RequireTrustDomainFromString(o.TrustDomain)
	id, err := sa.ID(td)
	if err != nil {
		return fmt.Errorf("workload: ExternalWorkload %s/%s names service account %q: %w; fix spec.serviceAccount", o.Namespace, o.Name, sa.Name, err)
	}
	j := Joined{Namespace: w.Namespace, Name: w.Name, SPIFFEID: id.String(), Token: token, Expires: w.Status.Join.Expires.Time.UTC(), Command: o.command(td)}
	if o.Systemd {
		j.Unit = o.unit(j)
	}
	if o.Output == "json" {
		return output.JSON(out, j)
	}
	return o.printJoin(out, j, now)
}

// command is the meshid-proxy command line on the machine.
func (o *Options) command(td spiffeid.TrustDomain) []string {
	caID := o.CAID
	if caID == "" {
		caID = spiffeid.RequireFromSegments(td, "ns", o.ControlPlane, "sa", "meshid-ca").String()
	}
	return append([]string{o.Binary,
		"--external-workload", o.Namespace + "/" + o.Name,
		"--join-token-file", o.TokenFile, "--state-dir", o.StateDir,
		"--trust-bundle-file", o.BundleFile,
		"--ca", o.CA, "--ca-id", caID, "--trust-domain", td.Name(),
	}, o.ProxyArgs...)
}

func (o *Options) printJoin(out io.Writer, j Joined, now time.Time) error {
	w := &strings.Builder{}
	fmt.Fprintf(w, "Join token for ExternalWorkload %s/%s, identity %s.\n", j.Namespace, j.Name, j.SPIFFEID)
	fmt.Fprintf(w, "It is accepted once, until %s (%s from now); a new join replaces it.\n\n", j.Expires.Format(time.RFC3339), j.Expires.Sub(now).Round(time.Second))
	fmt.Fprintf(w, "1. Where kubectl reaches the cluster, save the trust bundle and copy it to the machine as %s:\n\n", o.BundleFile)
	fmt.Fprintf(w, "  kubectl -n %s get configmap meshid-trust-bundle -o jsonpath='{.data.ca-bundle\\.crt}' > ca-bundle.crt\n\n", o.ControlPlane)
	fmt.Fprintf(w, "2. On the machine, as the user meshid-proxy runs as:\n\n")
	fmt.Fprintf(w, "  (umask 077; mkdir -p %s; printf '%%s\\n' %s > %s)\n", shellQuote(parentDir(o.TokenFile)), shellQuote(j.Token), shellQuote(o.TokenFile))
	if o.Systemd {
		fmt.Fprintf(w, "  install -m 0644 /dev/stdin /etc/systemd/system/%s <<'EOF'\n%sEOF\n  systemctl daemon-reload && systemctl enable --now %s\n", unitName(j), j.Unit, unitName(j))
	} else {
		quoted := make([]string, len(j.Command))
		for i, a := range j.Command {
			quoted[i] = shellQuote(a)
		}
		fmt.Fprintf(w, "  %s\n", strings.Join(quoted, " "))
	}
	fmt.Fprintf(w, "\nThe proxy keeps its key and certificate in %s and renews with them; the token is not needed again.\n", o.StateDir)
	fmt.Fprintf(w, "Stop its renewals with: meshid workload revoke %s -n %s (or delete the ExternalWorkload).\n", j.Name, j.Namespace)
	_, err := io.WriteString(out, w.String())
	return err
}

func unitName(j Joined) string { return "meshid-proxy-" + j.Namespace + "-" + j.Name + ".service" }

// unit is a systemd unit running the command, with the state dir systemd
// manages (0700) and the usual hardening.
func (o *Options) unit(j Joined) string {
	quoted := make([]string, len(j.Command))
	for i, a := range j.Command {
		quoted[i] = systemdQuote(a)
	}
	return fmt.Sprintf(`[Unit]
Description=meshid-proxy for ExternalWorkload %s/%s (%s)
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=%s
Restart=always
RestartSec=5
StateDirectory=%s
StateDirectoryMode=0700
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ReadWritePaths=%s

[Install]
WantedBy=multi-user.target
`, j.Namespace, j.Name, j.SPIFFEID, strings.Join(quoted, " "), strings.TrimPrefix(o.StateDir, "/var/lib/"), o.StateDir)
}

func parentDir(p string) string {
	if i := strings.LastIndex(p, "/"); i > 0 {
		return p[:i]
	}
	return "."
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func systemdQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\"'\\$%") {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "$", "$$", "%", "%%").Replace(s) + `"`
}

// Revoked is what revoke prints with -o json.
type Revoked struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Serial and NotAfter describe the last certificate; empty when there
	// was none.
	Serial   string     `json:"serial,omitempty"`
	NotAfter *time.Time `json:"not_after,omitempty"`
	// RemainingSeconds is its lifetime left, 0 when expired or none.
	RemainingSeconds int64 `json:"remaining_seconds"`
}

// Revoke stops the ExternalWorkload's renewals and cancels a pending join
// token, and prints how long the last certificate lives.
func Revoke(ctx context.Context, o *Options, out io.Writer) error {
	s, err := o.store()
	if err != nil {
		return err
	}
	now := o.now()
	var r Revoked
	if _, err := update(ctx, s, o.Namespace, o.Name, func(w *v1alpha1.ExternalWorkload) error {
		r = Revoked{Namespace: w.Namespace, Name: w.Name, Serial: w.Status.Serial}
		if w.Status.NotAfter != nil {
			t := w.Status.NotAfter.Time.UTC()
			r.NotAfter = &t
		}
		r.RemainingSeconds = int64(external.Revoke(w, now) / time.Second)
		return nil
	}); err != nil {
		return err
	}
	if o.Output == "json" {
		return output.JSON(out, r)
	}
	left := time.Duration(r.RemainingSeconds) * time.Second
	fmt.Fprintf(out, "Revoked ExternalWorkload %s/%s: meshid-ca refuses its renewals from now on, and its pending join token if any.\n", r.Namespace, r.Name)
	switch {
	case r.NotAfter == nil:
		fmt.Fprintln(out, "It holds no certificate from meshid-ca.")
	case left == 0:
		fmt.Fprintf(out, "Its last certificate (serial %s) expired at %s.\n", orNone(r.Serial), r.NotAfter.Format(time.RFC3339))
	default:
		fmt.Fprintf(out, "Its last certificate (serial %s) stays valid for %s more, until %s: peers accept it until then, unless their policy no longer admits its identity.\n",
			orNone(r.Serial), left, r.NotAfter.Format(time.RFC3339))
	}
	fmt.Fprintf(out, "To let it back in: meshid workload join %s -n %s.\n", r.Name, r.Namespace)
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// Row is one ExternalWorkload in list.
type Row struct {
	Namespace      string     `json:"namespace"`
	Name           string     `json:"name"`
	ServiceAccount string     `json:"service_account"`
	State          string     `json:"state"`
	JoinedAt       *time.Time `json:"joined_at,omitempty"`
	LastSeen       *time.Time `json:"last_seen,omitempty"`
	Serial         string     `json:"serial,omitempty"`
	NotAfter       *time.Time `json:"not_after,omitempty"`
}

// States of a Row.
const (
	StateActive   = "active"   // a certificate in force, renewable
	StatePending  = "pending"  // a join token waits
	StateExpired  = "expired"  // its certificate expired unrenewed
	StateRevoked  = "revoked"  // revoked, not joined since
	StateUnjoined = "unjoined" // never joined, no token
)

// List prints the ExternalWorkloads: who joined, when seen, certificate
// expiry.
func List(ctx context.Context, o *Options, out io.Writer) error {
	s, err := o.store()
	if err != nil {
		return err
	}
	ns := o.Namespace
	if o.AllNamespaces {
		ns = ""
	}
	ws, err := s.List(ctx, ns)
	if err != nil {
		return fmt.Errorf("workload: %w (is the ExternalWorkload CRD installed? meshid install --external-workloads)", err)
	}
	now := o.now()
	rows := make([]Row, 0, len(ws))
	for _, w := range ws {
		rows = append(rows, row(w, now))
	}
	slices.SortFunc(rows, func(a, b Row) int { return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name) })
	if o.Output == "json" {
		return output.JSON(out, rows)
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintf(out, "No ExternalWorkloads%s.\n", map[bool]string{true: "", false: " in " + o.Namespace}[o.AllNamespaces])
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tSERVICE ACCOUNT\tSTATE\tLAST SEEN\tCERTIFICATE EXPIRES")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Namespace, r.Name, r.ServiceAccount, r.State, ago(r.LastSeen, now), until(r.NotAfter, now))
	}
	return tw.Flush()
}

func row(w v1alpha1.ExternalWorkload, now time.Time) Row {
	r := Row{Namespace: w.Namespace, Name: w.Name, ServiceAccount: w.Spec.ServiceAccount, Serial: w.Status.Serial}
	r.JoinedAt, r.LastSeen, r.NotAfter = utc(w.Status.JoinedAt), utc(w.Status.LastSeen), utc(w.Status.NotAfter)
	switch {
	case w.Status.Serial != "" && external.Remaining(&w, now) > 0:
		r.State = StateActive
	case w.Status.Join != nil && now.Before(w.Status.Join.Expires.Time):
		r.State = StatePending
	case w.Status.Serial != "":
		r.State = StateExpired
	case w.Status.RevokedAt != nil:
		r.State = StateRevoked
	default:
		r.State = StateUnjoined
	}
	return r
}

func utc(m *metav1.Time) *time.Time {
	if m == nil {
		return nil
	}
	u := m.Time.UTC()
	return &u
}

func ago(t *time.Time, now time.Time) string {
	if t == nil {
		return "never"
	}
	return now.Sub(*t).Round(time.Second).String() + " ago"
}

func until(t *time.Time, now time.Time) string {
	if t == nil {
		return "-"
	}
	if !now.Before(*t) {
		return "expired " + t.Format(time.RFC3339)
	}
	return "in " + t.Sub(now).Round(time.Second).String() + " (" + t.Format(time.RFC3339) + ")"
}
