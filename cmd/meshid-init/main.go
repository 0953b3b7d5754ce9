// Command meshid-init programs a pod's traffic redirection to meshid-proxy.
// See `meshid-init --help`.
package main

import "github.com/meshid/meshid/cmd/internal/cli"

func main() { cli.Main(newRootCommand(run)) }
