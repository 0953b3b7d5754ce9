package sidecar

// Annotations of an injected pod.
const (
	// TransparentAnnotation "enabled" records that meshid-init redirects
	// the pod's TCP to its proxy: the pod is meshed on every port it does
	// not skip.
	TransparentAnnotation = "meshid.dev/transparent"
	// SkipInboundPortsAnnotation lists ports, "9100,9200", that reach the
	// app directly in plain: meshid-init leaves them alone, and discovery
	// tells callers they are not meshed.
	SkipInboundPortsAnnotation = "meshid.dev/skip-inbound-ports"
	// SkipOutboundPortsAnnotation and SkipOutboundCIDRsAnnotation list
	// destinations ("5432", "169.254.169.254/32") the app reaches without
	// the proxy.
	SkipOutboundPortsAnnotation = "meshid.dev/skip-outbound-ports"
	SkipOutboundCIDRsAnnotation = "meshid.dev/skip-outbound-cidrs"
)

// The injected proxy's admin port and user.
const (
	// AdminPort serves the proxy's /metrics, /ready, /live and /identity on
	// the pod's address; it is never redirected and never meshed.
	AdminPort = 15000
	// ProxyUID is the user the proxy runs as: meshid-init never redirects
	// its connections (they would loop).
	ProxyUID = 65532
)

// ALPN is the application protocol meshid-proxy offers when it originates
// mTLS: a transparent inbound listener tells a meshid peer from an app's
// own TLS by it, so any client of a transparent pod's port that means to
// be taken for a meshed peer (meshid verify) offers it too.
const ALPN = "meshid/1"
