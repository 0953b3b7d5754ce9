package kube

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
)

// Clients are the API clients of one command, built from one configuration.
// Building them does not contact the API server.
type Clients struct {
	Kube kubernetes.Interface
	// Dynamic reads and applies objects of any kind, such as cert-manager's.
	Dynamic dynamic.Interface
	// Mapper maps kinds to resources from the API server's discovery, asked
	// on first use and cached.
	Mapper meta.RESTMapper
}

// Connect builds a command's Clients from its --kubeconfig (see
// RESTConfig), with userAgent. Commands take one, so that tests can hand
// them fakes; NewClients is the real one.
type Connect func(kubeconfig, userAgent string) (*Clients, error)

// NewClients is the Connect of the real commands.
func NewClients(kubeconfig, userAgent string) (*Clients, error) {
	cfg, err := RESTConfig(kubeconfig, userAgent)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(client.Discovery()))
	return &Clients{Kube: client, Dynamic: dyn, Mapper: mapper}, nil
}
