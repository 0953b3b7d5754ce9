package proxy

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/util/validation"

	identityv1 "github.com/meshid/meshid/api/identity/v1"
	"github.com/meshid/meshid/issuer"
	"github.com/meshid/meshid/rotation"
)

// External makes the proxy an ExternalWorkload's, on a machine outside the
// cluster: it gets its first certificate with a one-time join token
// (JoinExternal) and renews it by presenting the current one
// (RenewExternal), and needs no service-account token. The key and
// certificate are kept in StateDir, so a restart renews with them instead
// of joining again.
type External struct {
	// Namespace and Name of the ExternalWorkload. Required.
	Namespace, Name string
	// JoinTokenFile holds the join token of `meshid workload join`; read
	// when the proxy holds no valid certificate (first start, or its
	// renewal refused: a new token there joins again). Required.
	JoinTokenFile string
	// StateDir keeps svid.pem (the chain) and svid.key (0600); created
	// 0700 if missing. Required.
	StateDir string
}

// The files in External.StateDir.
const (
	stateCert = "svid.pem"
	stateKey  = "svid.key"
)

func (e *External) validate() []error {
	var errs []error
	if len(validation.IsDNS1123Subdomain(e.Namespace)) > 0 || len(validation.IsDNS1123Subdomain(e.Name)) > 0 {
		errs = append(errs, fmt.Errorf("--external-workload %q: want NAMESPACE/NAME of an ExternalWorkload", e.Namespace+"/"+e.Name))
	}
	if e.JoinTokenFile == "" {
		errs = append(errs, errors.New("--external-workload needs --join-token-file (meshid workload join prints the token)"))
	}
	if e.StateDir == "" {
		errs = append(errs, errors.New("--external-workload needs --state-dir, where the key and certificate are kept"))
	}
	return errs
}

// loadState returns the certificate kept in the state dir if it is valid
// at now and chains to the bundle in force; nil when there is none.
func (p *Proxy) loadState(now time.Time) (*rotation.Issued, error) {
	dir := p.cfg.External.StateDir
	certFile, keyFile := filepath.Join(dir, stateCert), filepath.Join(dir, stateKey)
	if _, err := os.Stat(certFile); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	svid, err := x509svid.Load(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("proxy: the certificate in --state-dir %s: %w", dir, err)
	}
	leaf := svid.Certificates[0]
	if !now.Before(leaf.NotAfter) {
		return nil, fmt.Errorf("proxy: the certificate in --state-dir %s expired at %s", dir, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if _, _, err := x509svid.Verify(svid.Certificates, p.store, x509svid.WithTime(now)); err != nil {
		return nil, fmt.Errorf("proxy: the certificate in --state-dir %s does not chain to the trust bundle: %w", dir, err)
	}
	return &rotation.Issued{SVID: svid, RenewAfter: issuer.RenewAt(now, leaf.NotAfter, rand.Float64())}, nil
}

// saveState writes i's key (0600) and chain to the state dir, each
// replaced whole.
func (p *Proxy) saveState(i *rotation.Issued) error {
	dir := p.cfg.External.StateDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("proxy: --state-dir: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(i.SVID.PrivateKey)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	var chain []byte
	for _, c := range i.SVID.Certificates {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	// The key first: a chain never names a key that is not there.
	if err := replaceFile(filepath.Join(dir, stateKey), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})); err != nil {
		return err
	}
	return replaceFile(filepath.Join(dir, stateCert), chain)
}

func replaceFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("proxy: --state-dir: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("proxy: --state-dir: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("proxy: --state-dir: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("proxy: --state-dir: %w", err)
	}
	return nil
}

// obtainExternal gets the next certificate: a renewal with the one held,
// while it is valid; a join with the token file when there is none, or
// when the CA refused the renewal (revoked or deleted: a new token in the
// file joins again).
func (p *Proxy) obtainExternal(ctx context.Context, join identityv1.IdentityClient, now time.Time) (*rotation.Issued, error) {
	e := p.cfg.External
	snap := p.store.Load()
	if cert := snap.Certificate(); cert != nil && now.Before(cert.Leaf.NotAfter) {
		conn, err := rotation.DialCA(p.cfg.CA, p.store, p.cfg.CAID, rotation.WithClientCertificate(cert))
		if err != nil {
			return nil, err
		}
		got, err := rotation.RenewExternal(ctx, identityv1.NewIdentityClient(conn), e.Name, now)
		conn.Close()
		if status.Code(err) != codes.PermissionDenied {
			return got, err
		}
		p.log.Warn("the CA refused to renew this external workload's certificate; trying the join token file, and the current certificate stays in use until it expires",
			"external_workload", e.Namespace+"/"+e.Name, "error", err.Error(), "not_after", cert.Leaf.NotAfter)
		got, jerr := p.join(ctx, join, now)
		if jerr != nil {
			return nil, errors.Join(err, jerr)
		}
		return got, nil
	}
	return p.join(ctx, join, now)
}

func (p *Proxy) join(ctx context.Context, c identityv1.IdentityClient, now time.Time) (*rotation.Issued, error) {
	e := p.cfg.External
	b, err := os.ReadFile(e.JoinTokenFile)
	if err != nil {
		return nil, fmt.Errorf("proxy: --join-token-file: %w (get a token with: meshid workload join %s -n %s)", err, e.Name, e.Namespace)
	}
	if fi, err := os.Stat(e.JoinTokenFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		p.log.Warn("the join token file is readable by other users, who could join in this workload's place before it does: chmod 600 it",
			"file", e.JoinTokenFile, "mode", fi.Mode().Perm().String())
	}
	return rotation.JoinExternal(ctx, c, e.Namespace, e.Name, strings.TrimSpace(string(b)), now)
}

// startExternal puts the certificate of the state dir, if any, in force,
// and makes rc obtain certificates as an external workload and keep them
// in the state dir.
func (p *Proxy) startExternal(rc *rotation.RenewerConfig, join identityv1.IdentityClient) {
	held, err := p.loadState(p.cfg.Clock.Now())
	switch {
	case err != nil:
		p.log.Warn("the certificate kept in --state-dir is not usable; joining with the join token", "error", err.Error())
	case held != nil:
		p.store.SetSVID(held)
		p.log.Info("certificate loaded from --state-dir", "spiffe_id", held.SVID.ID.String(), "serial", held.SVID.Certificates[0].SerialNumber.Text(16), "not_after", held.SVID.Certificates[0].NotAfter)
	}
	rc.Client, rc.Token = nil, nil
	rc.Obtain = func(ctx context.Context, now time.Time) (*rotation.Issued, error) {
		return p.obtainExternal(ctx, join, now)
	}
	rc.Update = func(i *rotation.Issued) {
		p.store.SetSVID(i)
		if err := p.saveState(i); err != nil {
			p.log.Warn("cannot keep the new certificate in --state-dir: it is in use, but a restart must join again", "error", err.Error())
		}
	}
}
