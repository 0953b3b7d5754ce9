// Package limit owns per-caller limits: how many connections, calls or
// streams one caller (one IP address) may hold at once, so that a single
// misbehaving client cannot take a server's capacity from the others.
package limit
