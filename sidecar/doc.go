// Package sidecar owns the names and numbers an injected pod shares with
// meshid: the annotations the injector (webhooks/inject) writes and
// meshid-ca's discovery (ca) and meshid-init (proxy/redirect, through its
// flags) read, and the proxy's admin port and user, which the injector
// sets, meshid-init leaves unredirected and discovery never calls meshed,
// and the ALPN protocol by which a transparent proxy knows a meshed peer
// (the proxy and meshid verify offer it).
// Written once here, the siblings that cannot import each other agree by
// construction.
//
// It imports nothing from meshid.
package sidecar
