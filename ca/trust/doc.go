// Package trust owns the CA's trust state: the trust bundle and the issuer
// (an issuer.Signer) it signs with, swapped together as one immutable
// snapshot. The issuer is checked only through what every Signer exposes,
// so any key source passes the same checks.
//
// Updates arrive from Secrets, ConfigMaps or files in any order. A bundle is
// taken when it parses; an issuer only when it is a CA inside its validity
// that chains to the current bundle. A refused update changes nothing and
// the last good state stays in force. An issuer that does not yet chain (the
// new anchor has not arrived) is kept as pending and taken as soon as a
// bundle arrives that it chains to, so the order of updates during an anchor
// rotation does not matter.
//
// trust imports issuer/ and bundle; it must not import proxy/, webhooks/ or
// rotation/.
package trust
