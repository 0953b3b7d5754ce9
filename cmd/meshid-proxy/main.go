// Command meshid-proxy is the meshid mTLS sidecar. See `meshid-proxy --help`.
package main

import "github.com/meshid/meshid/cmd/internal/cli"

func main() {
	cli.TuneGC(50) // a small footprint in every pod (see cli.TuneGC)
	cli.Main(newRootCommand(run))
}
