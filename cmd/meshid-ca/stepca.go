package main

import (
	"bytes"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/issuer/keys"
	"github.com/meshid/meshid/issuer/upstream/stepca"
)

// Issuer sources (--issuer-source).
const (
	sourceSecret = "secret"
	sourceStepCA = "step-ca"
)

// stepCAOptions are the --step-ca-* flags.
type stepCAOptions struct {
	url, rootFile, provisioner, keyFile, passwordFile string
}

func (o *stepCAOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.url, "step-ca-url", "", "with --issuer-source step-ca: step-ca's address, https://HOST:PORT")
	fs.StringVar(&o.rootFile, "step-ca-root", "", "with --issuer-source step-ca: step-ca's root certificate(s) as a PEM file; verifies step-ca's TLS certificate and every intermediate it returns (put the same root in the trust bundle)")
	fs.StringVar(&o.provisioner, "step-ca-provisioner", "", "with --issuer-source step-ca: the name of the JWK provisioner meshid-ca uses (see docs/ca.md for its ca.json entry and X.509 template)")
	fs.StringVar(&o.keyFile, "step-ca-provisioner-key", "", "with --issuer-source step-ca: file holding the provisioner's private JWK (JSON, or the JWE step-ca stores, with --step-ca-provisioner-password-file), mounted from a Secret; never logged")
	fs.StringVar(&o.passwordFile, "step-ca-provisioner-password-file", "", "with --issuer-source step-ca: file holding the password of an encrypted (JWE) provisioner key")
}

func (o *stepCAOptions) set() bool {
	return o.url != "" || o.rootFile != "" || o.provisioner != "" || o.keyFile != "" || o.passwordFile != ""
}

// applyIssuerSource puts the upstream of --issuer-source into cfg. It reads
// the root and provisioner key files but does not call step-ca.
func (o *options) applyIssuerSource(cfg *ca.Config) error {
	switch o.issuerSource {
	case sourceSecret:
		if o.stepCA.set() {
			return cli.Usagef("the --step-ca-* flags need --issuer-source step-ca")
		}
		return nil
	case sourceStepCA:
	default:
		return cli.Usagef("--issuer-source %q: use secret or step-ca", o.issuerSource)
	}
	s := o.stepCA
	var missing []string
	for _, f := range []struct{ flag, v string }{{"--step-ca-url", s.url}, {"--step-ca-root", s.rootFile}, {"--step-ca-provisioner", s.provisioner}, {"--step-ca-provisioner-key", s.keyFile}} {
		if f.v == "" {
			missing = append(missing, f.flag)
		}
	}
	if len(missing) > 0 {
		return cli.Usagef("--issuer-source step-ca needs --step-ca-url, --step-ca-root, --step-ca-provisioner and --step-ca-provisioner-key; missing %s", strings.Join(missing, ", "))
	}
	if o.issuerKey == string(keys.Memory) {
		cfg.IssuerKeyURI = "" // the default: a new key in memory for each intermediate
	}
	root, err := os.ReadFile(s.rootFile)
	if err != nil {
		return cli.Usagef("--step-ca-root: %v", err)
	}
	key, err := os.ReadFile(s.keyFile)
	if err != nil {
		return cli.Usagef("--step-ca-provisioner-key: %v", err) // names the file, never its content
	}
	var password []byte
	if s.passwordFile != "" {
		if password, err = os.ReadFile(s.passwordFile); err != nil {
			return cli.Usagef("--step-ca-provisioner-password-file: %v", err)
		}
		password = bytes.TrimRight(password, "\r\n")
	}
	client, err := stepca.New(stepca.Config{URL: s.url, RootPEM: root, Provisioner: s.provisioner, Key: key, Password: password})
	if err != nil {
		return &cli.UsageError{Err: err}
	}
	cfg.Upstream, cfg.IssuerTTL = client, o.issuerTTL
	return nil
}
