// Command meshid is the meshid operator CLI. See `meshid --help`.
package main

import "github.com/meshid/meshid/cmd/internal/cli"

func main() {
	cli.Main(newRootCommand())
}
