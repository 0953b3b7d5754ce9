package health

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"

	"github.com/meshid/meshid/bundle"
)

// CertManager is what cert-manager holds for the issuer Secret: the
// Certificate that writes it, the Issuer that signs it, and that Issuer's
// anchor Secret.
type CertManager struct {
	Certificate Resource
	// Issuer is the Certificate's issuerRef; nil when not read.
	Issuer *Resource
	// AnchorSecret is a CA Issuer's Secret (spec.ca.secretName); nil when
	// the issuer is not a CA Issuer in the namespace.
	AnchorSecret *AnchorSecret
}

// Resource is one cert-manager object and its Ready condition.
type Resource struct {
	// Kind is "Certificate", "Issuer" or "ClusterIssuer"; Namespace is
	// empty for a ClusterIssuer.
	Kind, Namespace, Name string
	// Err is why it could not be read (not found, say); Forbidden when RBAC
	// denied the read (the row is skipped).
	Err       error
	Forbidden bool
	// Ready is its Ready condition; nil when it has none yet.
	Ready *Condition
}

// Condition is a cert-manager status condition.
type Condition struct {
	Status, Reason, Message string
}

// AnchorSecret is a CA Issuer's Secret: the anchor and its key.
type AnchorSecret struct {
	Namespace, Name string
	CertPEM         []byte
	HasKey          bool
	Err             error
	// Forbidden: check may not read it (it holds the anchor's key, which
	// few need to read); the row is skipped.
	Forbidden bool
}

func (r Resource) label() string {
	kind := strings.ToLower(r.Kind)
	if r.Namespace == "" {
		return "cert-manager " + kind + " " + r.Name
	}
	return "cert-manager " + kind + " " + r.Namespace + "/" + r.Name
}

func (c *checker) certManagerRows() {
	cm := c.in.CertManager
	if cm == nil {
		return
	}
	if cm.Issuer != nil {
		c.add(c.readiness(*cm.Issuer, "its Issuer"))
	}
	if s := cm.AnchorSecret; s != nil {
		c.add(c.anchorSecret(*s))
	}
	c.add(c.readiness(cm.Certificate, "the issuer Secret"))
}

// readiness is a cert-manager object's row: its Ready condition, as
// cert-manager says it.
func (c *checker) readiness(r Resource, what string) Row {
	row := Row{Check: r.label()}
	describe := c.kubectl("describe", strings.ToLower(r.Kind), r.Name)
	if r.Namespace == "" {
		describe = c.kubectlCluster("describe", strings.ToLower(r.Kind), r.Name)
	}
	switch {
	case r.Forbidden:
		row.Status, row.Detail = Skip, "skipped: not allowed to read it: "+r.Err.Error()
	case r.Err != nil:
		row.Status, row.Detail = Fail, r.Err.Error()
		row.Hint = "cert-manager needs it for " + what + ": " + c.meshid("install", "--cert-manager") + " prints it, with the rest of the install, for kubectl apply"
	case r.Ready == nil:
		row.Status, row.Detail = Warn, "no Ready condition yet: cert-manager has not looked at it"
		row.Hint = "is cert-manager's controller running? " + c.kubectlCluster("get", "pods", "--all-namespaces", "-l", "app.kubernetes.io/name=cert-manager")
	case r.Ready.Status != "True":
		row.Status, row.Detail = Fail, fmt.Sprintf("not Ready (%s): %s", r.Ready.Reason, r.Ready.Message)
		row.Hint = describe + " shows cert-manager's events"
	default:
		row.Status, row.Detail = OK, fmt.Sprintf("Ready (%s): %s", r.Ready.Reason, r.Ready.Message)
	}
	return row
}

func (c *checker) anchorSecret(s AnchorSecret) Row {
	row := Row{Check: "anchor secret " + s.Namespace + "/" + s.Name}
	restore := "restore the anchor and its key: " + c.kubectl("create", "secret", "tls", s.Name, "--cert=anchor.crt", "--key=anchor.key")
	switch {
	case s.Forbidden:
		row.Status, row.Detail = Skip, "skipped: not allowed to read it (it holds the anchor's key): "+s.Err.Error()
		return row
	case s.Err != nil:
		row.Status, row.Detail, row.Hint = Fail, s.Err.Error()+": the CA Issuer cannot sign the issuer", restore
		return row
	}
	block, _ := pem.Decode(s.CertPEM)
	var cert *x509.Certificate
	if block != nil {
		cert, _ = x509.ParseCertificate(block.Bytes)
	}
	switch {
	case cert == nil:
		row.Status, row.Detail, row.Hint = Fail, "tls.crt holds no certificate", restore
	case !s.HasKey:
		row.Status, row.Detail, row.Hint = Fail, "tls.key is empty: the CA Issuer cannot sign", restore
	default:
		sha := bundle.Fingerprint(cert)
		for i, a := range c.anchors {
			if a.sha == sha {
				row.Status, row.Detail = OK, fmt.Sprintf("holds anchor %d (%s) and its key", i, short(sha))
				return row
			}
		}
		row.Status = Fail
		row.Detail = fmt.Sprintf("holds %s (%s), which is not an anchor of the bundle in force: meshid-ca refuses the issuers cert-manager makes from it", cert.Subject, short(sha))
		row.Hint = "put the bundle's anchor back in it, or rotate to this one: " + c.meshid("rotate-anchor", "start", "--cert-manager", "--new-anchor-cert", "anchor.crt", "--new-anchor-key", "anchor.key")
	}
	return row
}
