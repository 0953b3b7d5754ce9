package external

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"

	"github.com/meshid/meshid/api/workload/v1alpha1"
)

// ErrChanged is UpdateStatus's answer when the object changed since it was
// read (or was deleted).
var ErrChanged = errors.New("external: the ExternalWorkload changed since it was read")

// Store reads and writes ExternalWorkloads on the API server, fresh at
// every call.
type Store struct {
	client dynamic.Interface
}

// NewStore returns a Store over client.
func NewStore(client dynamic.Interface) *Store { return &Store{client: client} }

// Get returns the object, or nil and no error when it does not exist.
func (s *Store) Get(ctx context.Context, ns, name string) (*v1alpha1.ExternalWorkload, error) {
	u, err := s.client.Resource(v1alpha1.Resource).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("external: get ExternalWorkload %s/%s: %w", ns, name, err)
	}
	return FromUnstructured(u)
}

// UpdateStatus writes w's status if the object is still at w's
// resourceVersion; ErrChanged if it is not, or is gone.
func (s *Store) UpdateStatus(ctx context.Context, w *v1alpha1.ExternalWorkload) (*v1alpha1.ExternalWorkload, error) {
	u, err := ToUnstructured(w)
	if err != nil {
		return nil, err
	}
	out, err := s.client.Resource(v1alpha1.Resource).Namespace(w.Namespace).UpdateStatus(ctx, u, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: %v", ErrChanged, err)
	}
	if err != nil {
		return nil, fmt.Errorf("external: update the status of ExternalWorkload %s/%s: %w", w.Namespace, w.Name, err)
	}
	return FromUnstructured(out)
}

// List returns the ExternalWorkloads of ns ("" for every namespace).
func (s *Store) List(ctx context.Context, ns string) ([]v1alpha1.ExternalWorkload, error) {
	l, err := s.client.Resource(v1alpha1.Resource).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("external: list ExternalWorkloads: %w", err)
	}
	out := make([]v1alpha1.ExternalWorkload, 0, len(l.Items))
	for i := range l.Items {
		w, err := FromUnstructured(&l.Items[i])
		if err != nil {
			return nil, err
		}
		out = append(out, *w)
	}
	return out, nil
}

// FromUnstructured converts an object the dynamic client returned.
func FromUnstructured(u *unstructured.Unstructured) (*v1alpha1.ExternalWorkload, error) {
	var w v1alpha1.ExternalWorkload
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &w); err != nil {
		return nil, fmt.Errorf("external: ExternalWorkload %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return &w, nil
}

// ToUnstructured converts w for the dynamic client.
func ToUnstructured(w *v1alpha1.ExternalWorkload) (*unstructured.Unstructured, error) {
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(w)
	if err != nil {
		return nil, fmt.Errorf("external: ExternalWorkload %s/%s: %w", w.Namespace, w.Name, err)
	}
	u := &unstructured.Unstructured{Object: obj}
	u.SetAPIVersion(v1alpha1.SchemeGroupVersion.String())
	u.SetKind("ExternalWorkload")
	return u, nil
}
