package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/rotation/health"
)

type checkOptions struct {
	kubeconfig       string
	namespace        string
	bundle, issuer   string
	deployment       string
	trustDomain      string
	proxies          []string
	warnWithin       time.Duration
	issuerWarnWithin time.Duration
	failOnWarning    bool
	watch            bool
	interval         time.Duration
	output           string
}

func newCheckCommand() *cobra.Command {
	o := &checkOptions{warnWithin: 60 * 24 * time.Hour}
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check the trust chain and expiry of everything meshid trusts",
		Long: strings.TrimSpace(`
check reads the cluster and reports one row per check, with a hint for every
problem:
  - the trust-bundle ConfigMap exists and parses;
  - each anchor is a CA, is valid, and expires after --warn-within (else: warn);
  - the issuer Secret is a CA whose key matches, chains to an anchor, and
    expires after its threshold: cert-manager's renewBefore when cert-manager
    manages it, else --issuer-warn-within, else a third of its lifetime
    (else: fail, it should have been renewed);
  - the meshid-ca Deployment has ready replicas;
  - with --proxies, each proxy's live certificate (from its /identity) chains
    to the current bundle and is not past its renewal time.
The headline is the time to outage: the earliest expiry of all of them.

Warnings exit 0 unless --fail-on-warning; failures exit 1. --watch checks
again every --interval and prints a line when a row changes.

` + cli.ExitCodes),
		Example: `  meshid check
  meshid check --proxies 10.0.3.7:15000,10.0.3.9:15000 --warn-within 90d -o json`,
		Args: cli.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if o.output != "table" && o.output != "json" {
				return cli.Usagef("-o %q: use table or json", o.output)
			}
			if _, err := spiffeid.TrustDomainFromString(o.trustDomain); err != nil {
				return cli.Usagef("--trust-domain %q: %v", o.trustDomain, err)
			}
			if o.interval <= 0 {
				return cli.Usagef("--interval must be positive")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return runCheck(cmd.Context(), o, cmd.OutOrStdout()) },
	}
	fs := cmd.Flags()
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG or ~/.kube/config)")
	fs.StringVarP(&o.namespace, "namespace", "n", "meshid", "namespace of meshid-ca")
	fs.StringVar(&o.bundle, "trust-bundle", "meshid-trust-bundle", "trust-bundle ConfigMap")
	fs.StringVar(&o.issuer, "issuer-secret", "meshid-issuer", "issuer Secret")
	fs.StringVar(&o.deployment, "deployment", "meshid-ca", "meshid-ca Deployment; empty skips the check")
	fs.StringVar(&o.trustDomain, "trust-domain", "cluster.local", "trust domain of the proxies' certificates")
	fs.StringSliceVar(&o.proxies, "proxies", nil, "admin addresses (host:port) of proxies whose live certificate to check")
	fs.Var(cli.Duration{D: &o.warnWithin}, "warn-within", "warn when an anchor expires within this (e.g. 60d)")
	fs.Var(cli.Duration{D: &o.issuerWarnWithin}, "issuer-warn-within", "fail when the issuer expires within this (default: cert-manager's renewBefore, else a third of its lifetime)")
	fs.BoolVar(&o.failOnWarning, "fail-on-warning", false, "exit 1 on warnings too")
	fs.BoolVar(&o.watch, "watch", false, "keep checking; print a line when something changes")
	fs.DurationVar(&o.interval, "interval", 30*time.Second, "time between checks with --watch")
	fs.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	return cmd
}

// errProblem makes check exit 1 without printing an extra error line.
var errProblem = &cli.SilentError{Err: errors.New("check: problems found")}

func runCheck(ctx context.Context, o *checkOptions, out io.Writer) error {
	client, err := kube.KubeClient(o.kubeconfig, "meshid-check")
	if err != nil {
		return err
	}
	dyn, err := kube.DynamicClient(o.kubeconfig, "meshid-check")
	if err != nil {
		return err
	}
	if !o.watch {
		rep := gather(ctx, o, client, dyn)
		if err := printCheck(out, o, rep); err != nil {
			return err
		}
		if w := rep.Worst(); w == health.Fail || (w == health.Warn && o.failOnWarning) {
			return errProblem
		}
		return nil
	}
	last := map[string]health.Status{}
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	for {
		rep := gather(ctx, o, client, dyn)
		for _, row := range rep.Rows {
			if last[row.Check] != row.Status {
				fmt.Fprintf(out, "%s  %-5s %s: %s\n", time.Now().UTC().Format(time.RFC3339), row.Status, row.Check, row.Detail)
				last[row.Check] = row.Status
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// gather reads the cluster and the proxies and runs the checks.
func gather(ctx context.Context, o *checkOptions, client kubernetes.Interface, dyn dynamic.Interface) *health.Report {
	in := health.Input{
		Now:         time.Now(),
		TrustDomain: spiffeid.RequireTrustDomainFromString(o.trustDomain),
		BundleName:  o.namespace + "/" + o.bundle, IssuerName: o.namespace + "/" + o.issuer,
		WarnWithin: o.warnWithin, IssuerWarnWithin: o.issuerWarnWithin,
	}
	if cm, err := client.CoreV1().ConfigMaps(o.namespace).Get(ctx, o.bundle, metav1.GetOptions{}); err != nil {
		in.BundleErr = readError("ConfigMap", err)
	} else if pem, ok := cm.Data["ca-bundle.crt"]; !ok {
		in.BundleErr = errors.New("the ConfigMap has no key ca-bundle.crt")
	} else {
		in.BundlePEM = []byte(pem)
	}
	if s, err := client.CoreV1().Secrets(o.namespace).Get(ctx, o.issuer, metav1.GetOptions{}); err != nil {
		in.IssuerErr = readError("Secret", err)
	} else {
		in.IssuerCert, in.IssuerKey = s.Data["tls.crt"], s.Data["tls.key"]
		if name := s.Annotations["cert-manager.io/certificate-name"]; name != "" {
			in.IssuerRenewBefore = renewBefore(ctx, dyn, o.namespace, name)
		}
	}
	if s, err := client.CoreV1().Secrets(o.namespace).Get(ctx, manifest.WebhookCASecret, metav1.GetOptions{}); err == nil {
		in.WebhookCAPEM = s.Data["tls.crt"]
		if mwc, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, manifest.InjectorConfig(o.namespace), metav1.GetOptions{}); err == nil && len(mwc.Webhooks) > 0 {
			in.WebhookCABundle = mwc.Webhooks[0].ClientConfig.CABundle
		}
	}
	if s, err := client.CoreV1().Secrets(o.namespace).Get(ctx, manifest.WebhookTLSSecret, metav1.GetOptions{}); err == nil {
		in.WebhookCertPEM = s.Data["tls.crt"]
	}
	if o.deployment != "" {
		r := &health.Replicas{Name: o.namespace + "/" + o.deployment}
		if d, err := client.AppsV1().Deployments(o.namespace).Get(ctx, o.deployment, metav1.GetOptions{}); err != nil {
			r.Err = readError("Deployment", err)
		} else {
			r.Ready = d.Status.ReadyReplicas
			r.Desired = 1
			if d.Spec.Replicas != nil {
				r.Desired = *d.Spec.Replicas
			}
		}
		in.CA = r
	}
	for _, addr := range o.proxies {
		in.Proxies = append(in.Proxies, proxyIdentity(ctx, addr))
	}
	return health.Run(in)
}

func readError(kind string, err error) error {
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%s not found", kind)
	}
	return fmt.Errorf("cannot read the %s: %w", kind, err)
}

var certificateGVR = schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "certificates"}

// renewBefore reads a cert-manager Certificate's renewBefore, or 0.
func renewBefore(ctx context.Context, dyn dynamic.Interface, ns, name string) time.Duration {
	u, err := dyn.Resource(certificateGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return 0
	}
	s, _, _ := unstructured.NestedString(u.Object, "spec", "renewBefore")
	d, _ := time.ParseDuration(s)
	return d
}

// proxyIdentity asks a proxy's admin endpoint for its live certificate.
func proxyIdentity(ctx context.Context, addr string) health.Proxy {
	p := health.Proxy{Addr: addr}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/identity", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.Err = fmt.Errorf("cannot reach /identity: %w", err)
		return p
	}
	defer resp.Body.Close()
	var doc struct {
		Chain  string `json:"chain_pem"`
		Bundle string `json:"bundle_sha256"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc); err != nil {
		p.Err = fmt.Errorf("/identity did not answer JSON: %w", err)
		return p
	}
	p.BundleSHA256 = doc.Bundle
	if doc.Chain != "" {
		certs, err := parseCertificates([]byte(doc.Chain))
		if err != nil {
			p.Err = fmt.Errorf("/identity chain: %w", err)
			return p
		}
		p.Chain = certs
	}
	return p
}

func printCheck(out io.Writer, o *checkOptions, rep *health.Report) error {
	if o.output == "json" {
		return writeJSON(out, struct {
			*health.Report
			Status health.Status `json:"status"`
		}{rep, rep.Worst()})
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tEXPIRES IN\tDETAIL")
	now := time.Now()
	for _, r := range rep.Rows {
		exp := "-"
		if r.Expires != nil {
			exp = timeLeft(*r.Expires, now)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Check, strings.ToUpper(string(r.Status)), exp, r.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rep.Rows {
		if r.Hint != "" && r.Status != health.OK {
			fmt.Fprintf(out, "hint: %s: %s\n", r.Check, r.Hint)
		}
	}
	if !rep.Outage.IsZero() {
		fmt.Fprintf(out, "\nTime to outage: %s (%s, at %s)\n", timeLeft(rep.Outage, now), rep.OutageWhat, rep.Outage.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(out, "Status: %s\n", strings.ToUpper(string(rep.Worst())))
	return nil
}
