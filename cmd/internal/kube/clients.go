package kube

import (
	"fmt"

	"github.com/spf13/pflag"
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

// Target chooses the cluster, as kubectl's --kubeconfig and --context do.
type Target struct {
	// Kubeconfig is the kubeconfig file; empty means $KUBECONFIG,
	// ~/.kube/config, or else the pod's in-cluster configuration.
	Kubeconfig string
	// Context is the kubeconfig context to use; empty means its
	// current-context.
	Context string
}

// AddFlags binds --kubeconfig and --context, as kubectl spells them.
func (t *Target) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&t.Kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG, then ~/.kube/config, then the pod's in-cluster configuration)")
	fs.StringVar(&t.Context, "context", "", "kubeconfig context to use (default its current-context)")
}

// String names the target in messages: "" for the defaults.
func (t Target) String() string {
	s := t.Kubeconfig
	if t.Context != "" {
		s += " (context " + t.Context + ")"
	}
	return s
}

// Connect builds a command's Clients for a Target, with userAgent.
// Commands take one, so that tests can hand them fakes; NewClients is the
// real one.
type Connect func(t Target, userAgent string) (*Clients, error)

// NewClients is the Connect of the real commands. An error of theirs that
// says the API server could not be reached gets its next step from Hint.
func NewClients(t Target, userAgent string) (*Clients, error) {
	cfg, err := restConfig(t, userAgent)
	if err != nil {
		return nil, err
	}
	markUnreachable(cfg, t)
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
