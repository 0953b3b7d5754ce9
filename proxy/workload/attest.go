package workload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Caller is the process at the other end of the socket, as the kernel
// says (SO_PEERCRED) and /proc/PID/exe shows it when it connected.
type Caller struct {
	PID, UID, GID uint32
	// Exe is the path of the caller's executable; empty when it could not
	// be read (the proxy needs root or CAP_SYS_PTRACE for another user's
	// process).
	Exe string
	// SHA256 is the hex SHA-256 of the executable, read only when a rule
	// asks for it; empty otherwise or when it could not be read.
	SHA256 string
}

func (c Caller) String() string {
	s := fmt.Sprintf("pid=%d uid=%d gid=%d", c.PID, c.UID, c.GID)
	if c.Exe != "" {
		s += " path=" + c.Exe
	}
	return s
}

// Allow is one rule of --workload-api-allow: a caller matches when every
// field that is set matches. A server with no rules admits every caller
// that can open the socket.
type Allow struct {
	UID, GID *uint32
	// Path is the executable's absolute path.
	Path string
	// SHA256 is the executable's hex SHA-256 (lower case).
	SHA256 string
}

// ParseAllow reads a rule written uid=N,gid=N,path=/ABS,sha256=HEX (any
// non-empty subset, each key once).
func ParseAllow(s string) (Allow, error) {
	var a Allow
	if strings.TrimSpace(s) == "" {
		return a, errors.New("workload: empty rule; want uid=N,gid=N,path=/ABS/PATH,sha256=HEX (at least one)")
	}
	seen := map[string]bool{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || v == "" {
			return a, fmt.Errorf("workload: %q: want KEY=VALUE with KEY uid, gid, path or sha256", kv)
		}
		if seen[k] {
			return a, fmt.Errorf("workload: %q: %s given twice; one rule is one caller, give several rules for several", s, k)
		}
		seen[k] = true
		switch k {
		case "uid", "gid":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return a, fmt.Errorf("workload: %s=%q: want a number (id -u NAME prints it)", k, v)
			}
			id := uint32(n)
			if k == "uid" {
				a.UID = &id
			} else {
				a.GID = &id
			}
		case "path":
			if !strings.HasPrefix(v, "/") {
				return a, fmt.Errorf("workload: path=%q: want the executable's absolute path", v)
			}
			a.Path = v
		case "sha256":
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != sha256.Size {
				return a, fmt.Errorf("workload: sha256=%q: want 64 hex digits (sha256sum FILE prints them)", v)
			}
			a.SHA256 = strings.ToLower(v)
		default:
			return a, fmt.Errorf("workload: %q: unknown key %q; want uid, gid, path or sha256", kv, k)
		}
	}
	return a, nil
}

// Match says whether c satisfies the rule.
func (a Allow) Match(c Caller) bool {
	return (a.UID == nil || *a.UID == c.UID) &&
		(a.GID == nil || *a.GID == c.GID) &&
		(a.Path == "" || a.Path == c.Exe) &&
		(a.SHA256 == "" || a.SHA256 == c.SHA256)
}

// admit is the decision: nil, or PERMISSION_DENIED saying who was refused.
func admit(rules []Allow, c Caller) error {
	if len(rules) == 0 {
		return nil
	}
	for _, r := range rules {
		if r.Match(c) {
			return nil
		}
	}
	return status.Errorf(codes.PermissionDenied, "workload: caller %s matches no --workload-api-allow rule of this proxy; ask its operator to allow it", c)
}

// peerCreds are gRPC transport credentials for a Unix socket: the
// handshake reads the caller's credentials and carries them as AuthInfo.
type peerCreds struct{ hash bool }

type authInfo struct {
	credentials.CommonAuthInfo
	caller Caller
}

func (authInfo) AuthType() string { return "unix-peercred" }

func (p peerCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	c, err := callerOf(conn, p.hash)
	if err != nil {
		return nil, nil, err
	}
	return conn, authInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}, caller: c}, nil
}

func (peerCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("workload: server-side credentials only")
}
func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "unix-peercred"}
}
func (p peerCreds) Clone() credentials.TransportCredentials { return p }
func (peerCreds) OverrideServerName(string) error           { return nil }

// callerOf reads SO_PEERCRED of a Unix connection and the caller's
// executable.
func callerOf(conn net.Conn, hash bool) (Caller, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return Caller{}, fmt.Errorf("workload: %T is not a Unix socket connection", conn)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Caller{}, fmt.Errorf("workload: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) { cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return Caller{}, fmt.Errorf("workload: %w", err)
	}
	if credErr != nil {
		return Caller{}, fmt.Errorf("workload: SO_PEERCRED: %w", credErr)
	}
	c := Caller{PID: uint32(cred.Pid), UID: cred.Uid, GID: cred.Gid}
	exe := fmt.Sprintf("/proc/%d/exe", cred.Pid)
	c.Exe, _ = os.Readlink(exe)
	if hash && c.Exe != "" {
		c.SHA256, _ = fileSHA256(exe)
	}
	return c, nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// callerFrom returns the caller the handshake recorded.
func callerFrom(ctx context.Context) (Caller, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Caller{}, false
	}
	ai, ok := p.AuthInfo.(authInfo)
	return ai.caller, ok
}

// attest returns the server options that refuse callers no rule admits.
func (s *Server) attest() []grpc.ServerOption {
	hash := false
	for _, r := range s.allow {
		hash = hash || r.SHA256 != ""
	}
	check := func(ctx context.Context) error {
		c, ok := callerFrom(ctx)
		if !ok {
			return status.Error(codes.PermissionDenied, "workload: the caller's credentials are unknown")
		}
		if err := admit(s.allow, c); err != nil {
			s.log.Warn("workload API caller refused", "pid", c.PID, "uid", c.UID, "gid", c.GID, "exe", c.Exe)
			return err
		}
		return nil
	}
	return []grpc.ServerOption{
		grpc.Creds(peerCreds{hash: hash}),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := check(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := check(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	}
}
