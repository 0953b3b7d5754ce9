// Package endpoint owns meshid-ca's SPIFFE bundle endpoint: the trust
// domain's bundle as a SPIFFE bundle document (go-spiffe's spiffebundle,
// served by its federation handler) with a sequence number and a refresh
// hint, and the JWT-SVID signing keys as jwt-svid keys when the CA mints
// them, the two profiles' TLS (https_spiffe: the CA's own SVID; https_web: a
// web certificate from files, re-read as they change, the last good kept)
// and the limits of its HTTP server.
//
// endpoint imports shared nouns (bundle, poll) and go-spiffe; it never
// imports issuer/, rotation/, proxy/ or webhooks/.
package endpoint
