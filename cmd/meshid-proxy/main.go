// Command meshid-proxy is the meshid mTLS sidecar. See `meshid-proxy --help`.
package main

import "github.com/meshid/meshid/cmd/internal/cli"

func main() {
	cli.Main(newRootCommand(run))
}
