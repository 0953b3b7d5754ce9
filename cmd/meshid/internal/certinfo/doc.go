// Package certinfo owns how the meshid CLI reads certificates from PEM and
// describes them to an operator (inspect, verify, certify, check): subject,
// SPIFFE ID, validity, time left, key type, fingerprint.
//
// It imports bundle only.
package certinfo
