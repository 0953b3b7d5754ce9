package csr

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MaxSize is the largest DER request Check parses, in bytes. A request with
// an RSA-4096 key and one SAN is under 2 KiB.
const MaxSize = 8 << 10

// RSA key sizes the CA accepts, in bits.
const (
	MinRSABits = 2048
	MaxRSABits = 8192
)

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
)

// refusedExtensions are extensions a request may not ask for: the CA sets
// what a leaf may do itself, and asking for more (or other) is refused, not
// dropped.
var refusedExtensions = []struct {
	oid  asn1.ObjectIdentifier
	name string
}{
	{asn1.ObjectIdentifier{2, 5, 29, 15}, "key usage"},
	{asn1.ObjectIdentifier{2, 5, 29, 37}, "extended key usage"},
	{asn1.ObjectIdentifier{2, 5, 29, 30}, "name constraints"},
}

// Check parses a DER PKCS#10 request and returns its public key when the
// request may be signed for id. It refuses, with an *Error:
//   - more than MaxSize bytes, or bytes that do not parse;
//   - a signature that does not verify with the request's own key;
//   - keys other than ECDSA P-256/P-384, Ed25519 and RSA 2048-8192 bits;
//   - a basicConstraints extension asking for CA:TRUE;
//   - key usage, extended key usage or name constraints extensions;
//   - a URI SAN other than id spelled exactly as id.String() (so no
//     SPIFFE:// scheme), id more than once, or any DNS, IP or email SAN.
func Check(der []byte, id spiffeid.ID) (crypto.PublicKey, error) {
	if len(der) > MaxSize {
		return nil, refuse(Malformed, "request is %d bytes, more than the %d-byte limit", len(der), MaxSize)
	}
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, refuse(Malformed, "request does not parse as DER PKCS#10: %v", err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, refuse(BadSignature, "request signature does not verify with its own public key: %v", err)
	}
	if err := checkKey(req.PublicKey); err != nil {
		return nil, err
	}
	var uris []string // as written in the request: crypto/x509 lowercases the scheme
	for _, ext := range req.Extensions {
		switch {
		case ext.Id.Equal(oidBasicConstraints):
			var bc struct {
				IsCA bool `asn1:"optional"`
			}
			if _, err := asn1.Unmarshal(ext.Value, &bc); err != nil {
				return nil, refuse(Malformed, "basicConstraints extension does not parse: %v", err)
			}
			if bc.IsCA {
				return nil, refuse(CARequested, "request asks for a CA certificate (basicConstraints CA:TRUE); workloads get leaf certificates only")
			}
		case ext.Id.Equal(oidSubjectAltName):
			if uris, err = rawURIs(ext.Value); err != nil {
				return nil, err
			}
		}
		for _, r := range refusedExtensions {
			if ext.Id.Equal(r.oid) {
				return nil, refuse(ExtensionRefused, "request asks for %s (extension %s); the CA sets a leaf's usages itself (digital signature, server and client auth): leave the extension out", r.name, r.oid)
			}
		}
	}
	if len(uris) != len(req.URIs) {
		return nil, refuse(Malformed, "subjectAltName extension holds %d URIs that crypto/x509 reads as %d", len(uris), len(req.URIs))
	}
	for _, u := range uris {
		if u != id.String() {
			return nil, refuse(NameMismatch, "request names %q but the token proves %s; leave the SAN out or ask for exactly that ID, spelled so", u, id)
		}
	}
	if len(uris) > 1 {
		return nil, refuse(NameMismatch, "request names %s %d times; ask for it once, or leave the SAN out", id, len(uris))
	}
	var other []string
	if len(req.DNSNames) > 0 {
		other = append(other, "DNS "+strings.Join(req.DNSNames, ","))
	}
	for _, ip := range req.IPAddresses {
		other = append(other, "IP "+ip.String())
	}
	if len(req.EmailAddresses) > 0 {
		other = append(other, "email "+strings.Join(req.EmailAddresses, ","))
	}
	if len(other) > 0 {
		return nil, refuse(NameMismatch, "request names %s; workload certificates carry only the SPIFFE ID %s", strings.Join(other, "; "), id)
	}
	return req.PublicKey, nil
}

// rawURIs returns the URI names of a subjectAltName extension as written.
// crypto/x509 has already parsed the extension, so a failure here is a
// request it reads differently.
func rawURIs(value []byte) ([]string, error) {
	var names asn1.RawValue
	if rest, err := asn1.Unmarshal(value, &names); err != nil || len(rest) > 0 || names.Class != asn1.ClassUniversal || names.Tag != asn1.TagSequence {
		return nil, refuse(Malformed, "subjectAltName extension is not a SEQUENCE of names")
	}
	var uris []string
	for in := names.Bytes; len(in) > 0; {
		var name asn1.RawValue
		var err error
		if in, err = asn1.Unmarshal(in, &name); err != nil {
			return nil, refuse(Malformed, "subjectAltName extension does not parse: %v", err)
		}
		if name.Class == asn1.ClassContextSpecific && name.Tag == 6 { // uniformResourceIdentifier
			uris = append(uris, string(name.Bytes))
		}
	}
	return uris, nil
}

func checkKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return refuse(WeakKey, "ECDSA curve %s is not accepted; use P-256 or P-384", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < MinRSABits || bits > MaxRSABits {
			return refuse(WeakKey, "RSA key of %d bits is not accepted; use %d to %d bits, or ECDSA P-256", bits, MinRSABits, MaxRSABits)
		}
	default:
		return refuse(WeakKey, "key type %T is not accepted; use ECDSA P-256", pub)
	}
	return nil
}
