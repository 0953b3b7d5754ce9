// Package keys owns where an issuer's private key lives: in memory, or in a
// PKCS#11 HSM through go.step.sm/crypto/kms (its pkcs11 backend, built only
// with cgo). Open turns a key URI ("memory", "pkcs11:token=...;id=...;
// object=...?module-path=...&pin-source=FILE") into a Key: a crypto.Signer
// whose private half never leaves the token, with its location, a health
// check (Health) that reopens a lost module, and Close. The CA and the
// upstream sources build their issuer.KeyPair around a Key's signer.
//
// The PIN comes only from the file pin-source names, never from the URI's
// pin-value (which would put it on a command line) and never into a log or
// an error.
//
// keys imports no meshid package; issuer/ and anything above may import it.
package keys
