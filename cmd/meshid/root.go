package main

import (
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/cmd/internal/cli"
)

func newRootCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "meshid",
		Short: "Operate meshid, the workload identity CA for Kubernetes service meshes",
		Long: strings.TrimSpace(`
meshid is the operator CLI of meshid, a certificate authority that gives every
Kubernetes service account a short-lived SPIFFE identity
(spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT).

` + cli.ExitCodes),
	}
	cmd.AddCommand(newCertifyCommand(runCertify), newInspectCommand(os.Stdin), newCheckCommand(), newVerifyCommand(), newInstallCommand(), newRotateCommand())
	cli.Setup(cmd)
	return cmd
}
