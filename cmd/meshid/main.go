// Command meshid is the meshid operator CLI. See `meshid --help`.
package main

import (
	"log/slog"
	"os"

	"k8s.io/klog/v2"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
)

func main() {
	// client-go logs through klog (such as "Unhandled Error" lines when
	// the API server cannot be reached); a command says what went wrong
	// in its own error, so klog's lines would only repeat it, raw.
	klog.SetSlogLogger(slog.New(slog.DiscardHandler))
	cli.Main(newRootCommand(kube.NewClients, os.Stdin))
}
