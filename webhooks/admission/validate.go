package admission

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/meshid/meshid/api/policy/v1alpha1"
	"github.com/meshid/meshid/policy"
)

func (s *Server) serveValidate(w http.ResponseWriter, r *http.Request) {
	ar, ok := review(w, r)
	if !ok {
		return
	}
	respond(w, ar, s.validate(r.Context(), ar.Request))
}

// validate refuses an AuthorizationPolicy that meshid-proxy would refuse
// (the same checks: package policy), or that conflicts with another one
// selecting the same pods and port with another mode.
func (s *Server) validate(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	deny := func(format string, args ...any) *admissionv1.AdmissionResponse {
		return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
			Status: metav1.StatusFailure, Reason: metav1.StatusReasonInvalid, Code: http.StatusUnprocessableEntity,
			Message: fmt.Sprintf(format, args...),
		}}
	}
	var ap v1alpha1.AuthorizationPolicy
	if err := json.Unmarshal(req.Object.Raw, &ap); err != nil {
		return deny("meshid: the AuthorizationPolicy does not decode: %v", err)
	}
	pf := policy.FromSpec(req.Namespace+"/"+ap.Name, ap.Spec)
	if _, err := policy.Compile(policy.File{Ports: []policy.PortFile{pf}}, s.cfg.TrustDomain); err != nil {
		return deny("meshid: AuthorizationPolicy %s/%s: %v", req.Namespace, ap.Name, err)
	}
	if ap.Spec.Selector != nil {
		if _, err := metav1.LabelSelectorAsSelector(ap.Spec.Selector); err != nil {
			return deny("meshid: AuthorizationPolicy %s/%s: selector: %v", req.Namespace, ap.Name, err)
		}
	}
	list, err := s.cfg.Dynamic.Resource(v1alpha1.Resource).Namespace(req.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		s.cfg.Log.Error("cannot list AuthorizationPolicies to look for conflicts; admitting", "error", err)
		return &admissionv1.AdmissionResponse{Allowed: true, Warnings: []string{"meshid: conflicts not checked: " + err.Error()}}
	}
	mode := pf.Mode.OrDeny()
	for _, item := range list.Items {
		var other v1alpha1.AuthorizationPolicy
		if runtime.DefaultUnstructuredConverter.FromUnstructured(item.Object, &other) != nil || other.Name == ap.Name {
			continue
		}
		otherMode := policy.Mode(other.Spec.Mode).OrDeny()
		if other.Spec.Port == ap.Spec.Port && reflect.DeepEqual(other.Spec.Selector, ap.Spec.Selector) && otherMode != mode {
			return deny("meshid: AuthorizationPolicy %s/%s conflicts with %s: both select the same pods and port %d, with modes %s and %s; merge them, or make their selectors differ",
				req.Namespace, ap.Name, other.Name, ap.Spec.Port, mode, otherMode)
		}
	}
	return &admissionv1.AdmissionResponse{Allowed: true}
}
