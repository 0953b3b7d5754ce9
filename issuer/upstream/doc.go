// Package upstream owns getting the CA's issuer from an upstream authority
// and renewing it: the seam every upstream plugs into (Authority: "give me a
// CA certificate for this public key"), the checks every answer passes
// before it is used (Check), and the Renewer that obtains an intermediate,
// prepares the next one at half of its life, keeps the current one in force
// while the upstream is down, and exposes its state (Status) for `meshid
// check`, metrics and the time to outage.
//
// An upstream (step-ca in upstream/stepca, a cert-manager CertificateRequest
// in upstream/certmanager) only transports the CSR and the answer; the key
// comes from a KeySource (memory by default; an HSM key is a crypto.Signer
// too), and the result is an issuer.KeyPair, so the CA's trust store applies
// every check it applies to any issuer.
//
// upstream imports issuer and shared nouns; it must not import ca/, proxy/,
// webhooks/ or rotation/.
package upstream
