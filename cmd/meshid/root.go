package main

import (
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/anchor"
	"github.com/meshid/meshid/cmd/meshid/internal/certify"
	"github.com/meshid/meshid/cmd/meshid/internal/check"
	"github.com/meshid/meshid/cmd/meshid/internal/dashboard"
	"github.com/meshid/meshid/cmd/meshid/internal/explain"
	"github.com/meshid/meshid/cmd/meshid/internal/inspect"
	"github.com/meshid/meshid/cmd/meshid/internal/install"
	"github.com/meshid/meshid/cmd/meshid/internal/verify"
	"github.com/meshid/meshid/cmd/meshid/internal/workload"
)

// newRootCommand builds meshid. connect builds the Kubernetes clients of
// every command that talks to the API server, from its --kubeconfig and
// --context; stdin is what inspect reads for "-".
func newRootCommand(connect kube.Connect, stdin io.Reader) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "meshid",
		Short: "Operate meshid, the workload identity CA for Kubernetes service meshes",
		Long: strings.TrimSpace(`
meshid is the operator CLI of meshid, a certificate authority that gives every
Kubernetes service account a short-lived SPIFFE identity
(spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT).

Every command that talks to the cluster takes --kubeconfig and --context, as
kubectl does. Results are marked (✔, ×) and coloured on a terminal, and plain
when piped or with NO_COLOR set. Shell completion: meshid completion bash|zsh|fish
(see meshid completion --help).

` + cli.ExitCodes),
	}
	cmd.AddCommand(
		newVersionCommand(),
		newCertifyCommand(certify.Run),
		newInspectCommand(stdin, inspect.Run),
		newCheckCommand(connect, check.Run),
		newVerifyCommand(connect, verify.Run),
		newInstallCommand(connect, install.Run),
		newRotateCommand(connect, anchor.Run),
		newDashboardCommand(connect, dashboard.Run),                                // issue 22
		newWorkloadCommand(connect, workload.Join, workload.Revoke, workload.List), // issue 21
		newPolicyCommand(connect, explain.Run, explain.List),                       // issue 19
	)
	hinted(cmd)
	cli.Setup(cmd)
	return cmd
}

// hinted has every command's error that says the API server could not be
// reached end with what to try next (kube.Hint), in one place.
func hinted(cmd *cobra.Command) {
	if run := cmd.RunE; run != nil {
		cmd.RunE = func(c *cobra.Command, args []string) error { return kube.Hint(run(c, args)) }
	}
	for _, sub := range cmd.Commands() {
		hinted(sub)
	}
}
