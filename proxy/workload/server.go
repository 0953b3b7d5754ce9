// Package workload owns the proxy's SPIFFE Workload API server: on a Unix
// socket it hands SPIFFE-aware applications (go-spiffe's workloadapi,
// SPIRE-compatible clients) the proxy's X.509-SVID and trust bundle, and
// streams both again whenever either changes. With EnableJWT (jwt.go) it
// also serves JWT-SVIDs: FetchJWTSVID (audiences required, none empty or
// *, only the proxy's own identity) from a cache per audience set that a
// JWT-SVID leaves at half its life, minted by the CA for the identity the
// proxy's X.509-SVID proves; FetchJWTBundles (the CA's jwt_authorities);
// ValidateJWTSVID (go-spiffe's jwtsvid.ParseAndValidate). Every refusal
// has a reason, told to JWTConfig.Refused.
//
// The socket is created with mode 0660. With Allow rules the server also
// attests every caller (attest.go): the kernel's peer credentials of the
// connection (SO_PEERCRED: PID, UID, GID) and the executable behind
// /proc/PID/exe (path, SHA-256) must match one rule, or the call fails
// with PERMISSION_DENIED; that is what keeps the identity from other users
// of a shared machine. Without rules, whoever can open the socket gets the
// identity, so it belongs in a volume only the pod's containers share.
//
// It imports proxy/state only.
package workload

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshid/meshid/proxy/state"
)

// securityHeader must be set by every Workload API client.
const securityHeader = "workload.spiffe.io"

// Server implements the SPIFFE Workload API over a state.Store.
type Server struct {
	workloadpb.UnimplementedSpiffeWorkloadAPIServer
	store *state.Store
	log   *slog.Logger
	allow []Allow
	jwt   *jwtCache // nil: no JWT-SVIDs (EnableJWT)
}

// New returns a server for store that admits the callers allow matches
// (every caller when allow is empty); log may be nil.
func New(store *state.Store, log *slog.Logger, allow []Allow) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{store: store, log: log, allow: allow}
}

// Serve listens on the Unix socket path and serves until ctx ends; it
// returns nil then and removes the socket. The socket is made under a
// temporary name, set to mode 0660, then renamed into place, so it is never
// reachable with wider permissions. Only a stale socket at path is
// replaced; any other file there is an error.
func (s *Server) Serve(ctx context.Context, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("workload: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("workload: %s exists and is not a socket; refusing to replace it", path)
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	_ = os.Remove(tmp)
	lis, err := net.Listen("unix", tmp)
	if err != nil {
		return fmt.Errorf("workload: listen %s: %w", path, err)
	}
	lis.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o660); err != nil {
		lis.Close()
		return fmt.Errorf("workload: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		lis.Close()
		return fmt.Errorf("workload: %w", err)
	}
	defer os.Remove(path)
	srv := grpc.NewServer(s.attest()...)
	workloadpb.RegisterSpiffeWorkloadAPIServer(srv, s)
	go func() { <-ctx.Done(); srv.Stop() }()
	s.log.Info("serving the SPIFFE Workload API", "socket", path, "allow_rules", len(s.allow))
	if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("workload: %w", err)
	}
	return nil
}

func checkHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(securityHeader); len(v) != 1 || v[0] != "true" {
		return status.Errorf(codes.InvalidArgument, "security header %q: true is missing; use a SPIFFE Workload API client", securityHeader)
	}
	return nil
}

// FetchX509SVID implements the Workload API.
func (s *Server) FetchX509SVID(_ *workloadpb.X509SVIDRequest, stream workloadpb.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	return s.follow(stream.Context(), func(snap *state.Snapshot) error {
		keyDER, err := x509.MarshalPKCS8PrivateKey(snap.SVID.PrivateKey)
		if err != nil {
			return status.Errorf(codes.Internal, "encode key: %v", err)
		}
		return stream.Send(&workloadpb.X509SVIDResponse{Svids: []*workloadpb.X509SVID{{
			SpiffeId:    snap.SVID.ID.String(),
			X509Svid:    concat(snap.SVID.Certificates),
			X509SvidKey: keyDER,
			Bundle:      concat(snap.Bundle.Anchors()),
		}}, FederatedBundles: federated(snap)})
	})
}

// FetchX509Bundles implements the Workload API.
func (s *Server) FetchX509Bundles(_ *workloadpb.X509BundlesRequest, stream workloadpb.SpiffeWorkloadAPI_FetchX509BundlesServer) error {
	return s.follow(stream.Context(), func(snap *state.Snapshot) error {
		bundles := federated(snap)
		if bundles == nil {
			bundles = map[string][]byte{}
		}
		bundles[s.store.TrustDomain().IDString()] = concat(snap.Bundle.Anchors())
		return stream.Send(&workloadpb.X509BundlesResponse{Bundles: bundles})
	})
}

// federated is the foreign trust domains' anchors by trust domain ID, as
// the Workload API's federated_bundles carries them (nil without
// federation).
func federated(snap *state.Snapshot) map[string][]byte {
	if len(snap.Foreign) == 0 {
		return nil
	}
	out := make(map[string][]byte, len(snap.Foreign))
	for td, b := range snap.Foreign {
		out[td.IDString()] = concat(b.Anchors())
	}
	return out
}

// follow calls send with the current snapshot once it has a certificate
// and a bundle, and again at every change, until ctx ends.
func (s *Server) follow(ctx context.Context, send func(*state.Snapshot) error) error {
	if err := checkHeader(ctx); err != nil {
		return err
	}
	var last *state.Snapshot
	for {
		changed := s.store.Changed()
		snap := s.store.Load()
		if snap != last && snap.SVID != nil && snap.Bundle != nil {
			if err := send(snap); err != nil {
				return err
			}
			last = snap
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

func concat(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}
