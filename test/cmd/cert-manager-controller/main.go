// Command cert-manager-controller runs cert-manager's own controllers
// (github.com/cert-manager/cert-manager v1.21) as a local process against any
// kube-apiserver, for the end-to-end tests. cert-manager's cmd/controller is
// not a fetchable module, so this small main wires up the controllers from the
// library's pkg/ the way cert-manager's own command does.
//
// It runs what CA and SelfSigned Issuers/ClusterIssuers and Certificates need:
// no ACME, Vault, Venafi, ingress/gateway shims, webhook, cainjector, leader
// election or metrics server. Apply cert-manager's CRDs (deploy/crds in the
// module) first.
//
//	cert-manager-controller --kubeconfig admin.kubeconfig [--namespace NS] [--v 2]
package main

import (
	"context"
	"flag"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	"github.com/cert-manager/cert-manager/pkg/controller"
	"github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	// Each import registers its controller in controller.Known().
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"

	// Issuer types that the issuers and clusterissuers controllers set up
	// (they check the CA Secret and set the Ready condition).
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

func main() {
	var opts controller.ContextOptions
	flag.StringVar(&opts.Kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "path to a kubeconfig (default $KUBECONFIG)")
	flag.StringVar(&opts.Namespace, "namespace", "", "watch only this namespace (default all; disables ClusterIssuers)")
	flag.StringVar(&opts.ClusterResourceNamespace, "cluster-resource-namespace", "kube-system", "namespace of the Secrets that ClusterIssuers refer to")
	flag.DurationVar(&opts.CertificateRequestMinimumBackoffDuration, "min-backoff", time.Hour, "first back-off after a failed issuance")
	flag.DurationVar(&opts.CertificateRequestMaximumBackoffDuration, "max-backoff", 32*time.Hour, "longest back-off after failed issuances")
	workers := flag.Int("workers", 5, "workers per controller")
	verbosity := flag.Int("v", 0, "log verbosity: 2 logs cert-manager's info messages, 4 debug")
	flag.Parse()

	// cert-manager logs through logr (V(2) is its "info"); route it, and
	// client-go's klog, to one slog handler whose level follows --v.
	handler := slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.Level(-*verbosity)})
	slog.SetDefault(slog.New(handler))
	logger := logr.FromSlogHandler(handler)
	logf.Log = logger.WithName("cert-manager")
	klog.SetLogger(logger)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(logf.NewContext(ctx, logf.Log), opts, *workers); err != nil {
		slog.Error("cert-manager-controller failed", "err", err)
		os.Exit(1)
	}
}

// run builds every registered controller, starts the shared informers and
// runs the controllers until ctx is done.
func run(ctx context.Context, opts controller.ContextOptions, workers int) error {
	// The same defaults as cert-manager's own controller (QPS and burst only
	// apply when the API server lacks API Priority and Fairness).
	opts.KubernetesAPIQPS, opts.KubernetesAPIBurst = 20, 50
	opts.CopiedAnnotationPrefixes = []string{"*", "-kubectl.kubernetes.io/", "-fluxcd.io/", "-argocd.argoproj.io/"}

	factory, err := controller.NewContextFactory(ctx, opts)
	if err != nil {
		return err
	}

	// Construct all controllers first: constructing one registers the
	// informers it needs, and the factories start only those informers.
	known := controller.Known()
	loops := map[string]controller.Interface{}
	for _, name := range slices.Sorted(maps.Keys(known)) {
		if opts.Namespace != "" && name == clusterissuers.ControllerName {
			continue // cluster-scoped: cert-manager skips it when namespaced
		}
		loop, err := known[name](factory)
		if err != nil {
			return err
		}
		loops[name] = loop
	}

	// The factories are shared by every Context that factory.Build returns.
	shared, err := factory.Build()
	if err != nil {
		return err
	}

	// A controller that fails stops the others too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(loops))
	for name, loop := range loops {
		wg.Go(func() {
			// Run fails only if its caches never sync before shutdown.
			if err := loop.Run(workers, ctx); err != nil && ctx.Err() == nil {
				slog.Error("controller stopped", "controller", name, "err", err)
				errs <- err
			}
		})
	}

	shared.KubeSharedInformerFactory.Start(ctx.Done())
	shared.SharedInformerFactory.Start(ctx.Done())
	shared.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())
	shared.KubeSharedInformerFactory.WaitForCacheSync(ctx.Done())
	shared.SharedInformerFactory.WaitForCacheSync(ctx.Done())
	if ctx.Err() == nil {
		slog.Info("cert-manager controllers running", "controllers", slices.Sorted(maps.Keys(loops)), "namespace", opts.Namespace)
	}

	select {
	case <-ctx.Done():
		err = nil
	case err = <-errs:
	}
	slog.Info("shutting down")
	cancel()
	wg.Wait()
	shared.KubeSharedInformerFactory.Shutdown()
	shared.SharedInformerFactory.Shutdown()
	shared.HTTP01ResourceMetadataInformersFactory.Shutdown()
	return err
}
