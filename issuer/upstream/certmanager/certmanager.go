package certmanager

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"go.step.sm/crypto/pemutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"

	"github.com/meshid/meshid/issuer/upstream"
)

var errDeleted = errors.New("it was deleted while meshid-ca waited")

// Resource is the CertificateRequests' API resource.
var Resource = schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "certificaterequests"}

// DefaultTimeout bounds the wait for approval and issuance of one request.
const DefaultTimeout = 2 * time.Minute

// Labels on every request meshid-ca makes.
const (
	// LabelReplica names the replica that made the request.
	LabelReplica = "meshid.io/replica"
	// LabelComponent is "meshid-ca-issuer" on every request.
	LabelComponent = "app.kubernetes.io/component"
)

// Config configures an Authority.
type Config struct {
	// Client talks to the API server. Required.
	Client dynamic.Interface
	// Namespace of the CertificateRequests (and of an Issuer). Required.
	Namespace string
	// IssuerName names the Issuer or ClusterIssuer. Required.
	IssuerName string
	// IssuerKind is "Issuer" or "ClusterIssuer"; empty means "Issuer".
	IssuerKind string
	// IssuerGroup is the issuer's API group, for external issuers
	// (say, "awspca.cert-manager.io"); empty means "cert-manager.io".
	IssuerGroup string
	// Replica names this replica (its Pod's name) in the requests' names
	// and label; empty means "meshid-ca".
	Replica string
	// Owner, when set, is put on every request as its owner (the
	// replica's Pod), so that a request left by a replica that crashed
	// while waiting is garbage-collected with the Pod. nil: none.
	Owner *metav1.OwnerReference
	// RootPEM, when set, holds the roots the intermediates must chain to;
	// status.ca then only joins the chain. Empty: the roots are status.ca
	// (the trust bundle still decides: the CA installs no intermediate
	// that does not chain to one of its anchors).
	RootPEM []byte
	// Timeout bounds each Sign (approval and issuance); 0 means
	// DefaultTimeout. A shorter deadline on Sign's context wins.
	Timeout time.Duration
	// Log hears what cannot be returned (a failed clean-up); nil discards.
	Log *slog.Logger
}

// Authority is a cert-manager upstream.
type Authority struct {
	cfg   Config
	roots []*x509.Certificate
}

// New checks cfg and returns an Authority. It does not call the API
// server.
func New(cfg Config) (*Authority, error) {
	if cfg.Client == nil {
		return nil, errors.New("certmanager: a Kubernetes client is required")
	}
	if cfg.Namespace == "" {
		return nil, errors.New("certmanager: the CertificateRequests' namespace is required")
	}
	if cfg.IssuerName == "" {
		return nil, errors.New("certmanager: name the cert-manager Issuer or ClusterIssuer to ask (--cert-manager-issuer)")
	}
	switch cfg.IssuerKind {
	case "":
		cfg.IssuerKind = cmapi.IssuerKind
	case cmapi.IssuerKind, cmapi.ClusterIssuerKind:
	default:
		return nil, fmt.Errorf("certmanager: issuer kind %q must be Issuer or ClusterIssuer (--cert-manager-issuer-kind)", cfg.IssuerKind)
	}
	if cfg.IssuerGroup == "" {
		cfg.IssuerGroup = "cert-manager.io"
	}
	if cfg.Replica == "" {
		cfg.Replica = "meshid-ca"
	}
	if errs := validation.IsDNS1123Subdomain(Name(cfg.Replica, make([]byte, 1))); len(errs) > 0 {
		return nil, fmt.Errorf("certmanager: replica name %q does not make a valid object name: %s", cfg.Replica, strings.Join(errs, "; "))
	}
	if errs := validation.IsValidLabelValue(cfg.Replica); len(errs) > 0 {
		return nil, fmt.Errorf("certmanager: replica name %q is not a valid label value: %s", cfg.Replica, strings.Join(errs, "; "))
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("certmanager: the timeout must be above zero, not %s", cfg.Timeout)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	a := &Authority{cfg: cfg}
	if len(cfg.RootPEM) > 0 {
		roots, err := pemutil.ParseCertificateBundle(cfg.RootPEM)
		if err != nil {
			return nil, fmt.Errorf("certmanager: the upstream roots must be PEM certificates: %w", err)
		}
		a.roots = roots
	}
	return a, nil
}

// Describe implements upstream.Authority.
func (a *Authority) Describe() string {
	ref := a.cfg.IssuerName
	if a.cfg.IssuerKind == cmapi.IssuerKind {
		ref = a.cfg.Namespace + "/" + ref
	}
	s := "cert-manager " + a.cfg.IssuerKind + " " + ref
	if a.cfg.IssuerGroup != "cert-manager.io" {
		s += " (" + a.cfg.IssuerGroup + ")"
	}
	if a.cfg.IssuerKind == cmapi.ClusterIssuerKind {
		s += ", requests in " + a.cfg.Namespace
	}
	return s
}

// Name is the CertificateRequest's name for the key whose
// SubjectPublicKeyInfo (DER) is spki, made by replica: one key, one name.
func Name(replica string, spki []byte) string {
	sum := sha256.Sum256(spki)
	return replica + "-" + hex.EncodeToString(sum[:8])
}

// Sign implements upstream.Authority: it creates (or, on a retry for the
// same key, finds) the CertificateRequest, waits until it is Approved and
// Ready, and deletes it once it is done with it, answered or not. A request
// of that name for another key is left alone.
func (a *Authority) Sign(ctx context.Context, req upstream.Request) (*upstream.Answer, error) {
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return nil, fmt.Errorf("certmanager: the CSR does not parse: %w", err)
	}
	name := Name(a.cfg.Replica, csr.RawSubjectPublicKeyInfo)
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	cr, err := a.create(ctx, name, req, csr)
	if err != nil {
		return nil, err
	}
	defer a.delete(ctx, name)
	done, err := a.wait(ctx, cr)
	if err != nil {
		return nil, err
	}
	return a.answer(done)
}

// create makes the request, or adopts the one of a previous try for the
// same key.
func (a *Authority) create(ctx context.Context, name string, req upstream.Request, csr *x509.CertificateRequest) (*cmapi.CertificateRequest, error) {
	cr := &cmapi.CertificateRequest{
		TypeMeta: metav1.TypeMeta{APIVersion: cmapi.SchemeGroupVersion.String(), Kind: cmapi.CertificateRequestKind},
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: a.cfg.Namespace,
			Labels: map[string]string{LabelReplica: a.cfg.Replica, LabelComponent: "meshid-ca-issuer"},
		},
		Spec: cmapi.CertificateRequestSpec{
			Request:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: req.CSR}),
			IsCA:      true,
			Usages:    []cmapi.KeyUsage{cmapi.UsageCertSign, cmapi.UsageCRLSign, cmapi.UsageDigitalSignature},
			IssuerRef: cmmeta.IssuerReference{Name: a.cfg.IssuerName, Kind: a.cfg.IssuerKind, Group: a.cfg.IssuerGroup},
		},
	}
	if req.TTL > 0 {
		cr.Spec.Duration = &metav1.Duration{Duration: req.TTL}
	}
	if a.cfg.Owner != nil {
		cr.OwnerReferences = []metav1.OwnerReference{*a.cfg.Owner}
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(cr)
	if err != nil {
		return nil, fmt.Errorf("certmanager: encode the CertificateRequest: %w", err)
	}
	res := a.cfg.Client.Resource(Resource).Namespace(a.cfg.Namespace)
	got, err := res.Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = res.Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			var old *cmapi.CertificateRequest
			if old, err = decode(got); err == nil && !sameKey(old.Spec.Request, csr) {
				return nil, fmt.Errorf("certmanager: CertificateRequest %s/%s exists for another key: delete it", a.cfg.Namespace, name)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("certmanager: create CertificateRequest %s/%s: %w", a.cfg.Namespace, name, err)
	}
	return decode(got)
}

// wait watches the request until it is issued or refused, or ctx ends.
func (a *Authority) wait(ctx context.Context, cr *cmapi.CertificateRequest) (*cmapi.CertificateRequest, error) {
	res := a.cfg.Client.Resource(Resource).Namespace(a.cfg.Namespace)
	name := cr.Name
	for {
		if done, err := outcome(cr); done {
			return cr, err
		}
		w, err := res.Watch(ctx, metav1.ListOptions{
			FieldSelector:   fields.OneTermEqualSelector("metadata.name", name).String(),
			ResourceVersion: cr.ResourceVersion,
		})
		if err != nil {
			return nil, a.notDone(ctx, cr, fmt.Errorf("watch: %w", err))
		}
		// A change between the last read and the watch's start is not
		// lost: read again now that the watch runs.
		u, err := res.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			w.Stop()
			return nil, a.notDone(ctx, cr, errDeleted)
		}
		if err == nil {
			if got, err := decode(u); err == nil {
				cr = got
			}
		}
		cr, err = a.follow(ctx, w, cr)
		w.Stop()
		if err == nil && cr.DeletionTimestamp != nil {
			err = errors.New("it is being deleted")
		}
		if err != nil {
			return nil, a.notDone(ctx, cr, err)
		}
	}
}

// follow reads w until the request is done, w closes (nil error: watch
// again) or ctx ends.
func (a *Authority) follow(ctx context.Context, w watch.Interface, cr *cmapi.CertificateRequest) (*cmapi.CertificateRequest, error) {
	for {
		if done, _ := outcome(cr); done {
			return cr, nil
		}
		select {
		case <-ctx.Done():
			return cr, ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return cr, nil
			}
			switch ev.Type {
			case watch.Deleted:
				return cr, errDeleted
			case watch.Error:
				return cr, nil // an expired resourceVersion: watch again
			}
			u, ok := ev.Object.(*unstructured.Unstructured)
			if !ok || u.GetName() != cr.Name {
				continue
			}
			if got, err := decode(u); err == nil {
				cr = got
			}
		}
	}
}

// notDone says why cr is not answered: err, or at the deadline the step it
// waits for.
func (a *Authority) notDone(ctx context.Context, cr *cmapi.CertificateRequest, err error) error {
	if ctx.Err() == nil {
		return fmt.Errorf("certmanager: wait for CertificateRequest %s/%s: %w", cr.Namespace, cr.Name, err)
	}
	step := "Approved (is an approver running: cert-manager's own, or approver-policy with a policy for meshid-ca?)"
	if approved(cr) {
		step = "Ready"
		if c := condition(cr, cmapi.CertificateRequestConditionReady); c != nil {
			step += fmt.Sprintf(" (it is %s: %s: %s)", c.Status, c.Reason, c.Message)
		} else {
			step += fmt.Sprintf(" (does %s exist, and does cert-manager watch %s?)", a.Describe(), a.cfg.Namespace)
		}
	}
	return fmt.Errorf("certmanager: CertificateRequest %s/%s is not %s: %w", cr.Namespace, cr.Name, step, ctx.Err())
}

// outcome says whether cr is done, and if it is refused, why.
func outcome(cr *cmapi.CertificateRequest) (bool, error) {
	for _, t := range []cmapi.CertificateRequestConditionType{cmapi.CertificateRequestConditionDenied, cmapi.CertificateRequestConditionInvalidRequest} {
		if c := condition(cr, t); c != nil && c.Status == cmmeta.ConditionTrue {
			return true, refusal(cr, c)
		}
	}
	c := condition(cr, cmapi.CertificateRequestConditionReady)
	switch {
	case c == nil:
		return false, nil
	case c.Status == cmmeta.ConditionFalse && c.Reason == cmapi.CertificateRequestReasonFailed:
		return true, refusal(cr, c)
	case c.Status == cmmeta.ConditionTrue && approved(cr) && len(cr.Status.Certificate) > 0:
		return true, nil
	}
	return false, nil
}

func refusal(cr *cmapi.CertificateRequest, c *cmapi.CertificateRequestCondition) error {
	return fmt.Errorf("certmanager: CertificateRequest %s/%s is %s=%s: %s: %s", cr.Namespace, cr.Name, c.Type, c.Status, c.Reason, c.Message)
}

func approved(cr *cmapi.CertificateRequest) bool {
	c := condition(cr, cmapi.CertificateRequestConditionApproved)
	return c != nil && c.Status == cmmeta.ConditionTrue
}

func condition(cr *cmapi.CertificateRequest, t cmapi.CertificateRequestConditionType) *cmapi.CertificateRequestCondition {
	for i := range cr.Status.Conditions {
		if cr.Status.Conditions[i].Type == t {
			return &cr.Status.Conditions[i]
		}
	}
	return nil
}

// answer turns an issued request into an Answer: status.certificate is the
// intermediate then its chain; status.ca the roots (or, with RootPEM, one
// more link of the chain).
func (a *Authority) answer(cr *cmapi.CertificateRequest) (*upstream.Answer, error) {
	certs, err := pemutil.ParseCertificateBundle(cr.Status.Certificate)
	if err != nil {
		return nil, fmt.Errorf("certmanager: CertificateRequest %s/%s: status.certificate: %w", cr.Namespace, cr.Name, err)
	}
	var ca []*x509.Certificate
	if len(cr.Status.CA) > 0 {
		if ca, err = pemutil.ParseCertificateBundle(cr.Status.CA); err != nil {
			return nil, fmt.Errorf("certmanager: CertificateRequest %s/%s: status.ca: %w", cr.Namespace, cr.Name, err)
		}
	}
	ans := &upstream.Answer{Certificate: certs[0], Roots: a.roots}
	links := certs[1:]
	if len(a.roots) == 0 {
		ans.Roots = ca
	} else {
		links = append(links, ca...)
	}
	for _, c := range links {
		if !contains(ans.Roots, c) && !contains(ans.Chain, c) {
			ans.Chain = append(ans.Chain, c)
		}
	}
	return ans, nil
}

// delete removes the request, even after ctx ended; a failure is logged
// (the owner reference, if any, still collects it).
func (a *Authority) delete(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := a.cfg.Client.Resource(Resource).Namespace(a.cfg.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		a.cfg.Log.Warn("could not delete a finished CertificateRequest; delete it by hand", "namespace", a.cfg.Namespace, "name", name, "error", err)
	}
}

func decode(u *unstructured.Unstructured) (*cmapi.CertificateRequest, error) {
	var cr cmapi.CertificateRequest
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cr); err != nil {
		return nil, fmt.Errorf("certmanager: decode CertificateRequest %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return &cr, nil
}

// sameKey: the PEM CSR in request is for csr's key.
func sameKey(request []byte, csr *x509.CertificateRequest) bool {
	b, _ := pem.Decode(request)
	if b == nil {
		return false
	}
	other, err := x509.ParseCertificateRequest(b.Bytes)
	return err == nil && string(other.RawSubjectPublicKeyInfo) == string(csr.RawSubjectPublicKeyInfo)
}

func contains(list []*x509.Certificate, c *x509.Certificate) bool {
	for _, l := range list {
		if l.Equal(c) {
			return true
		}
	}
	return false
}
