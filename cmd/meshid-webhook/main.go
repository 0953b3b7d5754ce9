// Command meshid-webhook is meshid's admission webhook server (sidecar
// injection). See `meshid-webhook --help`.
package main

import "github.com/meshid/meshid/cmd/internal/cli"

func main() {
	cli.Main(newRootCommand())
}
