package dashboard

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/meshid/meshid/api/policy/v1alpha1"
)

// policyPage is what web/policy.html shows: the namespaces to choose from
// and the chosen one's matrix.
type policyPage struct {
	Now time.Time
	// RefreshMS paces the live updates (web/live.js).
	RefreshMS int64
	// Namespaces are the cluster's; NamespacesProblem says why they could
	// not be listed (the form still takes a name).
	Namespaces        []string
	NamespacesProblem string
	// Namespace is the one asked for (?namespace=); "" when none.
	Namespace string
	// Problem says why its matrix could not be computed.
	Problem string
	Matrix  *matrix
}

func (s *server) policy(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := policyPage{Now: s.clock.Now(), RefreshMS: s.refreshMS(), Namespace: r.URL.Query().Get("namespace")}
	if nss, err := s.c.Kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); err != nil {
		p.NamespacesProblem = "the namespaces could not be listed (" + err.Error() + "); type a name"
	} else {
		for _, ns := range nss.Items {
			p.Namespaces = append(p.Namespaces, ns.Name)
		}
	}
	if p.Namespace != "" {
		if errs := validation.IsDNS1123Label(p.Namespace); len(errs) > 0 {
			p.Problem = fmt.Sprintf("%q is not a namespace name: %s", p.Namespace, strings.Join(errs, "; "))
		} else if m, err := s.matrix(ctx, p.Namespace); err != nil {
			p.Problem = err.Error()
		} else {
			p.Matrix = m
		}
	}
	s.render(w, "policy.html", p)
}

// matrix reads namespace ns's pods, service accounts and
// AuthorizationPolicies with the operator's RBAC and computes its matrix.
func (s *server) matrix(ctx context.Context, ns string) (*matrix, error) {
	td, err := spiffeid.TrustDomainFromString(s.o.Check.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("--trust-domain: %w", err)
	}
	cannot := func(what string, err error) error {
		return fmt.Errorf("cannot list %s in namespace %s: %w (the matrix needs list on pods, serviceaccounts and authorizationpolicies.meshid.dev there, with your RBAC)", what, ns, err)
	}
	pods, err := s.c.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, cannot("pods", err)
	}
	sas, err := s.c.Kube.CoreV1().ServiceAccounts(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, cannot("serviceaccounts", err)
	}
	var aps []v1alpha1.AuthorizationPolicy
	var notes []string
	list, err := s.c.Dynamic.Resource(v1alpha1.Resource).Namespace(ns).List(ctx, metav1.ListOptions{})
	switch {
	case apierrors.IsNotFound(err):
		notes = append(notes, "the AuthorizationPolicy CRD is not installed (meshid install applies it): every port has its pod's default mode")
	case err != nil:
		return nil, cannot("authorizationpolicies.meshid.dev", err)
	default:
		for _, u := range list.Items {
			var ap v1alpha1.AuthorizationPolicy
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &ap); err != nil {
				notes = append(notes, fmt.Sprintf("AuthorizationPolicy %s does not decode (%v): meshid-ca skips it too", u.GetName(), err))
				continue
			}
			aps = append(aps, ap)
		}
	}
	m := matrixOf(td, ns, pods.Items, sas.Items, aps)
	m.Notes = append(notes, m.Notes...)
	return &m, nil
}
