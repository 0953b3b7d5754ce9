// Command meshid-proxy is the meshid mTLS sidecar. See `meshid-proxy --help`.
package main

import "github.com/meshid/meshid/cmd/internal/cli"

func main() {
	cli.TuneGC(100) // Go's default pacing, and a soft limit under the container's (see cli.TuneGC)
	cli.Main(newRootCommand(run))
}
