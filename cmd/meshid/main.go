// Command meshid is the meshid operator CLI. See `meshid --help`.
package main

import (
	"os"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
)

func main() {
	cli.Main(newRootCommand(kube.NewClients, os.Stdin))
}
