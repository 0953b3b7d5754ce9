package kube

import (
	"errors"
	"fmt"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// NoCluster is the error of a command that finds no cluster to talk to.
const NoCluster = "no cluster configured: no kubeconfig at $KUBECONFIG or ~/.kube/config (or it names no cluster), and not running in a pod; pass --kubeconfig FILE, or set KUBECONFIG"

// RESTConfig loads a client configuration: from path when set, else from
// $KUBECONFIG or ~/.kube/config, else the pod's in-cluster configuration.
func RESTConfig(path, userAgent string) (*rest.Config, error) {
	return restConfig(Target{Kubeconfig: path}, userAgent)
}

// restConfig is RESTConfig in t's context.
func restConfig(t Target, userAgent string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = t.Kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: t.Context}).ClientConfig()
	if err != nil {
		switch {
		case t.Context != "":
			return nil, fmt.Errorf("kubeconfig %s: context %q: %w (kubectl config get-contexts lists them)", kubeconfigName(t.Kubeconfig), t.Context, err)
		case t.Kubeconfig == "" && clientcmd.IsEmptyConfig(err):
			// client-go's text here names KUBERNETES_MASTER, which
			// meshid does not read.
			return nil, errors.New(NoCluster)
		case t.Kubeconfig == "":
			return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfigName(""), err)
		}
		return nil, fmt.Errorf("kubeconfig %s: %w", t.Kubeconfig, err)
	}
	cfg.UserAgent = userAgent
	cfg.QPS, cfg.Burst = 100, 200
	return cfg, nil
}

func kubeconfigName(path string) string {
	if path == "" {
		return "($KUBECONFIG or ~/.kube/config)"
	}
	return path
}

// KubeClient builds a clientset (see RESTConfig).
func KubeClient(path, userAgent string) (kubernetes.Interface, error) {
	return KubeClientQPS(path, userAgent, 0)
}

// KubeClientQPS is KubeClient with its own client-side rate limit: qps
// requests a second, bursts of twice that; 0 keeps RESTConfig's.
func KubeClientQPS(path, userAgent string, qps float32) (kubernetes.Interface, error) {
	cfg, err := RESTConfig(path, userAgent)
	if err != nil {
		return nil, err
	}
	if qps > 0 {
		cfg.QPS, cfg.Burst = qps, int(2*qps)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return client, nil
}

// DynamicClient builds a dynamic client (see RESTConfig), for objects of
// other projects such as cert-manager's.
func DynamicClient(path, userAgent string) (dynamic.Interface, error) {
	cfg, err := RESTConfig(path, userAgent)
	if err != nil {
		return nil, err
	}
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return client, nil
}
