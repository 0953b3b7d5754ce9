package policy

import (
	"errors"
	"fmt"
	"strings"
)

// ErrPath is wrapped by every error NormalizePath returns: the proxy
// answers such a request 400, whatever the rules say.
var ErrPath = errors.New("policy: path refused")

// NormalizePath returns the one spelling of an escaped request path (as
// url.URL.EscapedPath gives it) that request rules are matched against and
// that the app is sent: percent-encoded unreserved characters decoded
// (%2e is ., %41 is A), other escapes in upper case, empty segments
// merged (// is /), . and .. segments resolved (.. never above the
// root), a trailing slash kept. Letters are not folded: paths are case
// sensitive, as in Gateway API. An encoded slash, backslash or NUL, a raw
// backslash or control character, a malformed escape, or a path that does
// not start with / is refused (ErrPath): each is a way to make the app
// see another path than the rules did. An already normal path is
// returned as is, without allocating.
func NormalizePath(p string) (string, error) {
	if p == "" || p[0] != '/' {
		return "", fmt.Errorf("%w: %q does not start with /", ErrPath, p)
	}
	if isNormal(p) {
		return p, nil
	}
	// Decode what may be decoded; refuse what must not be.
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return "", fmt.Errorf("%w: malformed escape at byte %d", ErrPath, i)
			}
			d := unhex(p[i+1])<<4 | unhex(p[i+2])
			switch {
			case d == '/' || d == '\\' || d == 0:
				return "", fmt.Errorf("%w: an encoded slash, backslash or NUL (%s) would make the app see another path", ErrPath, p[i:i+3])
			case isUnreserved(d):
				b.WriteByte(d)
			default:
				b.WriteByte('%')
				b.WriteByte(upperHex[d>>4])
				b.WriteByte(upperHex[d&15])
			}
			i += 2
		case c == '\\' || c < 0x20 || c == 0x7f:
			return "", fmt.Errorf("%w: a backslash or control character at byte %d", ErrPath, i)
		default:
			b.WriteByte(c)
		}
	}
	return resolve(b.String()), nil
}

// resolve merges empty segments and resolves dot segments of a decoded
// path that starts with /.
func resolve(p string) string {
	segs := make([]string, 0, strings.Count(p, "/"))
	trailing := false
	for seg := range strings.SplitSeq(p[1:], "/") {
		trailing = false
		switch seg {
		case "":
			trailing = true
		case ".":
			trailing = true
		case "..":
			if len(segs) > 0 {
				segs = segs[:len(segs)-1]
			}
			trailing = true
		default:
			segs = append(segs, seg)
		}
	}
	out := "/" + strings.Join(segs, "/")
	if trailing && len(segs) > 0 {
		out += "/"
	}
	return out
}

// isNormal reports whether p (starting with /) has nothing to decode,
// merge or resolve.
func isNormal(p string) bool {
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '%' || c == '\\' || c < 0x20 || c == 0x7f:
			return false
		case c == '/' && i+1 < len(p) && p[i+1] == '/':
			return false
		case c == '.' && p[i-1] == '/': // p[0] is '/', so i >= 1
			end := i + 1
			if end < len(p) && p[end] == '.' {
				end++
			}
			if end == len(p) || p[end] == '/' {
				return false
			}
		}
	}
	return true
}

const upperHex = "0123456789ABCDEF"

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// isUnreserved is RFC 3986's unreserved set: ALPHA DIGIT - . _ ~
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// NormalizeHost returns the name a Host header or :authority names: the
// port dropped, lower case, trailing dots removed ("Shop.Example.:8080"
// is "shop.example"). An already normal name is returned as is, without
// allocating.
func NormalizeHost(h string) string {
	if strings.HasPrefix(h, "[") { // [v6]:port
		if end := strings.IndexByte(h, ']'); end > 0 {
			return strings.ToLower(h[1:end])
		}
	} else if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.Count(h, ":") == 1 {
		h = h[:i]
	}
	return strings.TrimRight(strings.ToLower(h), ".")
}
