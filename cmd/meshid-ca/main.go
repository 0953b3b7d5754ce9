// Command meshid-ca is the meshid identity service. See `meshid-ca --help`.
package main

import "github.com/meshid/meshid/cmd/internal/cli"

func main() {
	cli.TuneGC(400) // signing throughput over memory (see cli.TuneGC)
	cli.Main(newRootCommand(run))
}
