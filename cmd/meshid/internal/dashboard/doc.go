// Package dashboard owns `meshid dashboard`: a web server on loopback that
// reads the cluster with the operator's own kubeconfig (kube.Connect) and
// renders what it reads as server-side HTML (html/template, embedded with
// its stylesheet and script). The trust page shows the report of
// cmd/meshid/internal/check (check.Report: the same rows, hints and time to
// outage as `meshid check`, from rotation/health) with an SVG expiry
// timeline. The fleet page shows the proxies' reports and the anchor
// rotation stage by stage (rotation/anchor's Status, as `meshid
// rotate-anchor status`); the policy page the who-may-call-whom matrix of
// a namespace, each cell the proxy's own decision (ca/policies.FileFor,
// policy.Parse, policy.Port.Authorize). It refuses requests whose Host is not the address it listens on
// (DNS rebinding) and never renders key or token material: it only reads
// what check reads, and check's rows carry none.
//
// It is cmd's: it may import anything cmd may.
package dashboard
