// Package certinfo owns how the meshid CLI reads certificates (PEM or DER,
// and the private keys beside them, of which it keeps only the public
// half) and describes them to an operator (inspect, verify, certify,
// check): subject, SPIFFE ID, serial, validity, time left, key type, key
// usages, path length, fingerprint.
//
// It imports bundle only.
package certinfo
