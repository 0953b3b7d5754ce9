package manifest

import (
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// CertManager describes the cert-manager objects that keep the issuer
// fresh: a CA Issuer over the anchor, and a Certificate for the issuer
// written to the Secret meshid-ca watches.
type CertManager struct {
	// AnchorCertPEM and AnchorKeyPEM are the anchor, stored in the
	// AnchorSecret the CA Issuer signs with. Required.
	AnchorCertPEM, AnchorKeyPEM []byte
	// Duration and RenewBefore of the issuer; 48h and 25h when zero.
	Duration, RenewBefore time.Duration
}

func certManagerObjects(o Options, meta func(string) metav1.ObjectMeta) ([]runtime.Object, error) {
	cm := o.CertManager
	if cm.Duration == 0 {
		cm.Duration = 48 * time.Hour
	}
	if cm.RenewBefore == 0 {
		cm.RenewBefore = 25 * time.Hour
	}
	return []runtime.Object{
		&corev1.Secret{
			TypeMeta: typeMeta("v1", "Secret"), ObjectMeta: meta(AnchorSecret), Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: cm.AnchorCertPEM, corev1.TLSPrivateKeyKey: cm.AnchorKeyPEM},
		},
		&cmapi.Issuer{
			TypeMeta: typeMeta("cert-manager.io/v1", "Issuer"), ObjectMeta: meta(AnchorIssuer),
			Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: AnchorSecret}}},
		},
		&cmapi.Certificate{
			TypeMeta: typeMeta("cert-manager.io/v1", "Certificate"), ObjectMeta: meta(IssuerSecret),
			Spec: cmapi.CertificateSpec{
				CommonName:  "meshid issuer",
				Subject:     &cmapi.X509Subject{Organizations: []string{"meshid"}},
				IsCA:        true,
				Duration:    &metav1.Duration{Duration: cm.Duration},
				RenewBefore: &metav1.Duration{Duration: cm.RenewBefore},
				PrivateKey: &cmapi.CertificatePrivateKey{
					Algorithm:      cmapi.ECDSAKeyAlgorithm,
					Size:           256,
					RotationPolicy: cmapi.RotationPolicyAlways,
				},
				Usages:     []cmapi.KeyUsage{cmapi.UsageCertSign, cmapi.UsageCRLSign, cmapi.UsageDigitalSignature},
				SecretName: IssuerSecret,
				IssuerRef:  cmmeta.IssuerReference{Name: AnchorIssuer, Kind: cmapi.IssuerKind, Group: "cert-manager.io"},
			},
		},
	}, nil
}
