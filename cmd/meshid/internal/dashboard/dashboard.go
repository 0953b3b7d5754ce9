package dashboard

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/utils/clock"

	"github.com/meshid/meshid/cmd/internal/cli"
	"github.com/meshid/meshid/cmd/internal/kube"
	"github.com/meshid/meshid/cmd/meshid/internal/check"
)

// Options are dashboard's flags, and what tests replace.
type Options struct {
	// Address is the loopback address to listen on; Port its port (0: any
	// free port, printed at start).
	Address string
	Port    int
	// Check is what the trust page checks, as `meshid check` would (its
	// Cluster, Namespace, object names, thresholds).
	Check check.Options

	// Connect builds the Kubernetes clients; nil means kube.NewClients.
	Connect kube.Connect
	// Clock tells the pages the time; nil means the real clock.
	Clock clock.PassiveClock
	// Refresh is how often the pages' script fetches them again
	// (--refresh); 0 means 10 s.
	Refresh time.Duration
	// Log receives the server's errors; nil means standard error in Run
	// and nothing in Handler.
	Log *slog.Logger
}

// Validate refuses flags that cannot work, as usage errors.
func (o *Options) Validate() error {
	ip := net.ParseIP(o.Address)
	if ip == nil || !ip.IsLoopback() {
		return cli.Usagef("--address %q: the dashboard listens on loopback only (127.0.0.1 or ::1); to reach it from elsewhere, use an SSH tunnel", o.Address)
	}
	if _, err := spiffeid.TrustDomainFromString(o.Check.TrustDomain); err != nil {
		return cli.Usagef("--trust-domain %q: %v", o.Check.TrustDomain, err)
	}
	if o.Port < 0 || o.Port > 65535 {
		return cli.Usagef("--port %d: use 0 to 65535", o.Port)
	}
	if o.Refresh < 0 || (o.Refresh > 0 && o.Refresh < 100*time.Millisecond) {
		return cli.Usagef("--refresh %s: use 100ms or more (the pages fetch themselves that often)", o.Refresh)
	}
	return nil
}

// Run connects to the cluster, listens and serves until ctx ends, after
// printing the address to out.
func Run(ctx context.Context, o *Options, out io.Writer) error {
	connect := o.Connect
	if connect == nil {
		connect = kube.NewClients
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	c, err := connect(o.Check.Cluster, "meshid-dashboard")
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(o.Address, strconv.Itoa(o.Port)))
	if err != nil {
		return fmt.Errorf("dashboard: %w (choose another --port)", err)
	}
	srv := &http.Server{Handler: Handler(o, c, ln.Addr().(*net.TCPAddr).Port), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(out, "meshid dashboard on http://%s/ (Ctrl-C stops it)\n", ln.Addr())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		_ = srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

//go:embed web
var web embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"stamp": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
	"date":  func(t time.Time) string { return t.UTC().Format("2006-01-02") },
	"short": func(sha string) string { return sha[:min(len(sha), 12)] },
	"join":  strings.Join,
}).ParseFS(web, "web/*.html"))

// Handler serves the pages, reading the cluster with c. port is the one
// it listens on: requests must name it in their Host.
func Handler(o *Options, c *kube.Clients, port int) http.Handler {
	clk, log := o.Clock, o.Log
	if clk == nil {
		clk = clock.RealClock{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &server{o: o, c: c, clock: clk, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/trust", http.StatusFound) })
	mux.HandleFunc("GET /trust", s.trust)
	mux.HandleFunc("GET /fleet", s.fleet)
	mux.HandleFunc("GET /policy", s.policy)
	mux.Handle("GET /web/", http.FileServerFS(web))
	return hosts(port, headers(mux))
}

// server is one dashboard's state: what every page reads with.
type server struct {
	o     *Options
	c     *kube.Clients
	clock clock.PassiveClock
	log   *slog.Logger
}

// hosts refuses a request whose Host is not loopback on port: a page of
// another site whose name resolves to 127.0.0.1 (DNS rebinding) sends its
// own name.
func hosts(port int, next http.Handler) http.Handler {
	p := strconv.Itoa(port)
	allowed := map[string]bool{"127.0.0.1:" + p: true, "localhost:" + p: true, "[::1]:" + p: true}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allowed[r.Host] {
			http.Error(w, fmt.Sprintf("meshid dashboard: Host %q refused: open http://127.0.0.1:%s/ (requests naming other hosts are refused against DNS rebinding)", r.Host, p), http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// headers: no script but our own, no framing, nothing cached.
func headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// refreshMS is Options.Refresh in milliseconds, for the pages' script.
func (s *server) refreshMS() int64 {
	if s.o.Refresh <= 0 {
		return 10000
	}
	return s.o.Refresh.Milliseconds()
}

// render executes the page template name with data.
func (s *server) render(w http.ResponseWriter, name string, data any) {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, data); err != nil {
		s.log.Error("dashboard: rendering "+name, "err", err)
		http.Error(w, "meshid dashboard: the page could not be rendered; see the dashboard's log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = buf.WriteTo(w)
}
