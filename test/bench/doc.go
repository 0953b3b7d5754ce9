// Package bench measures meshid against the limit of the machine it runs on
// and against real peers (SPIRE server, nginx), in one run. It is driven by
// test/cmd/bench (make bench), never by make test: figures are reported, not
// asserted.
package bench
