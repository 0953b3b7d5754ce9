package bench

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// NginxTLS is the material of one nginx side: its certificate chain and
// key files, and the trust anchors it verifies its peer with.
type NginxTLS struct {
	CertFile, KeyFile, AnchorsFile string
}

// NginxOutbound is the config of an nginx stream proxy in the role of an
// outbound meshid-proxy: plain TCP in on listen, mTLS (TLS 1.3, client
// certificate) out to upstream. nginx cannot check a SPIFFE ID, and its
// name check needs a DNS SAN, which SVIDs lack: upstream verification is
// off, so this side does less than meshid's outbound proxy.
func NginxOutbound(listen, upstream string, t NginxTLS) string {
	return fmt.Sprintf(`    server {
        listen %s;
        proxy_pass %s;
        proxy_ssl on;
        proxy_ssl_protocols TLSv1.3;
        proxy_ssl_certificate %s;
        proxy_ssl_certificate_key %s;
        proxy_ssl_trusted_certificate %s;
        proxy_ssl_verify off;
        proxy_ssl_session_reuse off;
    }
`, listen, upstream, t.CertFile, t.KeyFile, t.AnchorsFile)
}

// NginxInbound is the config of an nginx stream proxy in the role of an
// inbound meshid-proxy: mTLS in on listen (TLS 1.3, ssl_verify_client on),
// plain TCP out to app.
func NginxInbound(listen, app string, t NginxTLS) string {
	return fmt.Sprintf(`    server {
        listen %s ssl;
        proxy_pass %s;
        ssl_protocols TLSv1.3;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_client_certificate %s;
        ssl_verify_client on;
        ssl_verify_depth 3;
        ssl_session_tickets off;
    }
`, listen, app, t.CertFile, t.KeyFile, t.AnchorsFile)
}

// StartNginx runs nginx (one worker, in the foreground) with the stream
// servers given, under pin, in dir, and waits until every listen address
// accepts connections.
func StartNginx(bin, dir string, pin Pinned, listens []string, servers ...string) (*Proc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
master_process on;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 8192; }
stream {
`, dir)
	for _, s := range servers {
		conf += s
	}
	conf += "}\n"
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	p, err := pin.Start(dir, "nginx", bin, "-p", dir, "-c", path, "-e", filepath.Join(dir, "error.log"))
	if err != nil {
		return nil, err
	}
	err = p.WaitFor(10*time.Second, func() error {
		for _, l := range listens {
			c, err := net.Dial("tcp", l)
			if err != nil {
				return err
			}
			c.Close()
		}
		return nil
	})
	if err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}
