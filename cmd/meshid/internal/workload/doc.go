// Package workload is `meshid workload`: join (a one-time join token for an
// ExternalWorkload, and the meshid-proxy command or systemd unit that uses
// it), revoke (stop its renewals, and say how long its last certificate
// lives) and list. It writes only the objects' status, through ca/external,
// which owns the token and what revoking means.
package workload
