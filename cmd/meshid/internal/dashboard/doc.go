// Package dashboard owns `meshid dashboard`: a web server on loopback that
// reads the cluster with the operator's own kubeconfig (kube.Connect) and
// renders what it reads as server-side HTML (html/template, embedded with
// its stylesheet and script). The trust page shows the report of
// cmd/meshid/internal/check (check.Report: the same rows, hints and time to
// outage as `meshid check`, from rotation/health) with an SVG expiry
// timeline. It refuses requests whose Host is not the address it listens on
// (DNS rebinding) and never renders key or token material: it only reads
// what check reads, and check's rows carry none.
//
// It is cmd's: it may import anything cmd may.
package dashboard
