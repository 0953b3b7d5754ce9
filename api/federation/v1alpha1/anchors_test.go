package v1alpha1_test

import (
	"crypto/x509"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/api/federation/v1alpha1"
	"github.com/meshid/meshid/issuer/issuertest"
)

// brokenPEM is a CERTIFICATE block whose DER is cut short.
const brokenPEM = `-----BEGIN CERTIFICATE-----
MIIBejCCASCgAwIBAgIBATAKBggqhkjOPQQDAjARMQ8wDQYDVQQDEwZhbmNob3Iw
HhcNMjUwMTAxMDAwMDAwWhcNMzUwMTAxMDAwMDAwWjARMQ8wDQYDVQQDEwZhbmNo
b3IwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQ=
-----END CERTIFICATE-----
`

// TestAnchors: the status wins over the initial bundle; an object with
// neither, or with garbage in either, says which and what.
func TestAnchors(t *testing.T) {
	a := issuertest.Anchor(t)
	doc, err := spiffebundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("b.example"), []*x509.Certificate{a.Cert}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		ftd  v1alpha1.FederatedTrustDomain
		from string
	}{
		"initial PEM":         {ftd(string(a.CertPEM()), ""), v1alpha1.FromInitial},
		"initial document":    {ftd(string(doc), ""), v1alpha1.FromInitial},
		"stored over garbage": {ftd("garbage", string(doc)), v1alpha1.FromStatus},
	} {
		td, anchors, from, err := tc.ftd.Anchors()
		if err != nil || td.Name() != "b.example" || len(anchors) != 1 || !anchors[0].Equal(a.Cert) || from != tc.from {
			t.Errorf("%s: %s %d anchors from %q, %v; want the anchor from %q", name, td, len(anchors), from, err, tc.from)
		}
	}
	for name, tc := range map[string]struct {
		ftd  v1alpha1.FederatedTrustDomain
		want string
	}{
		"no trust domain":     {v1alpha1.FederatedTrustDomain{}, "spec.trustDomain"},
		"no bundle":           {ftd("", ""), "never fetched, and no spec.initialBundle"},
		"garbage status":      {ftd("", "not json"), "the stored bundle (a SPIFFE bundle document) does not parse"},
		"garbage initial":     {ftd("not pem", ""), "the initial bundle (PEM anchors)"},
		"garbage document":    {ftd(`{"keys": 7}`, ""), "the initial bundle (a SPIFFE bundle document) does not parse"},
		"empty document":      {ftd("", `{"keys":[]}`), "the stored bundle has no X.509 anchor"},
		"status over initial": {ftd(brokenPEM, `{"keys":[]}`), "the stored bundle has no X.509 anchor"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, _, err := tc.ftd.Anchors()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Anchors = %v, want %q", err, tc.want)
			}
		})
	}
}

func ftd(initial, stored string) v1alpha1.FederatedTrustDomain {
	return v1alpha1.FederatedTrustDomain{
		Spec:   v1alpha1.FederatedTrustDomainSpec{TrustDomain: "b.example", InitialBundle: initial},
		Status: v1alpha1.FederatedTrustDomainStatus{Bundle: stored},
	}
}

// FuzzAnchors: no initial bundle or stored document makes Anchors panic,
// and what it accepts has an anchor.
func FuzzAnchors(f *testing.F) {
	f.Add("", `{"keys":[]}`)
	f.Add(brokenPEM, "")
	f.Add(`{"keys":[{"kty":"EC","use":"x509-svid","x5c":["AAAA"]}]}`, "")
	f.Fuzz(func(t *testing.T, initial, stored string) {
		ftd := ftd(initial, stored)
		_, anchors, from, err := ftd.Anchors()
		if err == nil && (len(anchors) == 0 || from == "") {
			t.Fatalf("accepted %d anchors from %q", len(anchors), from)
		}
	})
}
