package anchor_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshid/meshid/bundle"
	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/issuer"
)

const ns = "meshid"

// newClient is client-go's fake clientset holding objs, with what the
// rotator's conditional writes rely on: every create and update gets a new
// resourceVersion, and an update naming another one is a conflict.
func newClient(objs ...runtime.Object) *fake.Clientset {
	c := fake.NewClientset(objs...)
	rv := 100 // the fake's lock serializes reactors
	c.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		o, ok := a.(interface{ GetObject() runtime.Object }) // a create or an update
		if !ok || a.GetVerb() != "create" && a.GetVerb() != "update" {
			return false, nil, nil
		}
		obj := o.GetObject().DeepCopyObject()
		m, err := meta.Accessor(obj)
		if err != nil {
			return true, nil, err
		}
		gvr, tracker := a.GetResource(), c.Tracker()
		if a.GetVerb() == "update" {
			cur, err := tracker.Get(gvr, a.GetNamespace(), m.GetName())
			if err != nil {
				return true, nil, err
			}
			cm, _ := meta.Accessor(cur)
			if v := m.GetResourceVersion(); v != "" && v != cm.GetResourceVersion() {
				return true, nil, apierrors.NewConflict(gvr.GroupResource(), m.GetName(), nil)
			}
		}
		rv++
		m.SetResourceVersion(strconv.Itoa(rv))
		if a.GetVerb() == "create" {
			err = tracker.Create(gvr, obj, a.GetNamespace())
		} else {
			err = tracker.Update(gvr, obj, a.GetNamespace())
		}
		if err != nil {
			return true, nil, err
		}
		return true, obj.DeepCopyObject(), nil
	})
	return c
}

// installed is what meshid install writes: the bundle of the old anchor,
// the issuer, and in cert-manager mode the anchor cert-manager signs with.
func installed(iss *issuer.KeyPair, certManager bool) []runtime.Object {
	objs := []runtime.Object{
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: manifest.BundleConfigMap, Namespace: ns}, Data: map[string]string{bundle.Key: string(w.old.PEM())}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: manifest.IssuerSecret, Namespace: ns}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: iss.CertPEM(), corev1.TLSPrivateKeyKey: keyPEM(iss)}},
	}
	if certManager {
		objs = append(objs, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: manifest.AnchorSecret, Namespace: ns}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: w.oldAnchor.CertPEM(), corev1.TLSPrivateKeyKey: keyPEM(w.oldAnchor)}})
	}
	return objs
}

// sim plays the fleet against the fake API server: two CA replicas that
// load the issuer Secret and the bundle ConfigMap, proxies that load the
// bundle and, while a re-issue window is set, renew from the issuer, and
// (in cert-manager mode) cert-manager re-issuing a deleted issuer Secret
// from its anchor Secret. It reacts to every change of a ConfigMap or
// Secret at once, and publishes the replicas' reports, stamped with the
// fake clock, when they change.
type sim struct {
	t           *testing.T
	client      *fake.Clientset
	clock       *clocktesting.FakeClock
	certManager bool

	mu       sync.Mutex
	proxies  []*simProxy
	replicas map[string]fleet.Report // last published
}

type simProxy struct {
	fleet.Proxy
	replica string
	frozen  bool // SIGSTOPped: reports nothing new
	gone    bool // its replica no longer reports it
}

func newSim(t *testing.T, client *fake.Clientset, clock *clocktesting.FakeClock, iss *issuer.KeyPair, certManager bool) *sim {
	s := &sim{t: t, client: client, clock: clock, certManager: certManager, replicas: map[string]fleet.Report{}}
	for _, p := range proxies {
		s.proxies = append(s.proxies, &simProxy{replica: p.replica, Proxy: fleet.Proxy{
			ID: spiffeID(p.sa), Instance: p.instance, BundleSHA256: w.old.SHA256(),
			LeafIssuerSHA256: iss.Fingerprint(), LeafAnchorSHA256: w.oldAnchor.Fingerprint(),
			LastSeen: clock.Now(), Heartbeat: fleet.Duration(10 * time.Second),
		}})
	}
	return s
}

// edit changes the proxy of service account sa and publishes.
func (s *sim) edit(ctx context.Context, sa string, f func(*simProxy)) {
	s.mu.Lock()
	for _, p := range s.proxies {
		if p.ID == spiffeID(sa) {
			f(p)
		}
	}
	s.mu.Unlock()
	s.sync(ctx)
}

// run keeps the fleet in step with the cluster until ctx ends.
func (s *sim) run(ctx context.Context) {
	cms, err := s.client.CoreV1().ConfigMaps(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		s.t.Error(err)
		return
	}
	defer cms.Stop()
	secrets, err := s.client.CoreV1().Secrets(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		s.t.Error(err)
		return
	}
	defer secrets.Stop()
	s.sync(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-cms.ResultChan():
		case <-secrets.ResultChan():
		}
		s.sync(ctx)
	}
}

func (s *sim) sync(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	cm, err := s.client.CoreV1().ConfigMaps(ns).Get(ctx, manifest.BundleConfigMap, metav1.GetOptions{})
	if err != nil {
		s.t.Errorf("sim: %v", err)
		return
	}
	b, err := bundle.Parse([]byte(cm.Data[bundle.Key]))
	if err != nil {
		s.t.Errorf("sim: the bundle: %v", err)
		return
	}
	window := cm.Data[bundle.ReissueWindowKey]
	iss := s.issuer(ctx, now)
	for _, p := range s.proxies {
		if p.frozen {
			continue
		}
		p.BundleSHA256, p.LastSeen = b.SHA256(), now
		if window != "" && iss != nil && p.LeafIssuerSHA256 != iss.Fingerprint() && iss.Verify(b, now) == nil {
			p.LeafIssuerSHA256 = iss.Fingerprint()
			for _, a := range b.Anchors() {
				if iss.Cert.CheckSignatureFrom(a) == nil {
					p.LeafAnchorSHA256 = bundle.Fingerprint(a)
				}
			}
		}
	}
	for _, name := range []string{"ca-0", "ca-1"} {
		rep := fleet.Report{Replica: name, Updated: now, BundleSHA256: b.SHA256(), IssuerSHA256: s.replicas[name].IssuerSHA256}
		if iss != nil {
			rep.IssuerSHA256 = iss.Fingerprint()
		}
		for _, p := range s.proxies {
			if p.replica == name && !p.gone {
				rep.Proxies = append(rep.Proxies, p.Proxy)
			}
		}
		s.publish(ctx, rep)
	}
}

// issuer reads the issuer Secret; in cert-manager mode a missing one is
// re-issued from the anchor Secret first. Nil when there is none.
func (s *sim) issuer(ctx context.Context, now time.Time) *issuer.KeyPair {
	secrets := s.client.CoreV1().Secrets(ns)
	sec, err := secrets.Get(ctx, manifest.IssuerSecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && s.certManager {
		a, err := secrets.Get(ctx, manifest.AnchorSecret, metav1.GetOptions{})
		if err != nil {
			s.t.Errorf("sim: cert-manager: %v", err)
			return nil
		}
		anchor, err := issuer.Parse(a.Data[corev1.TLSCertKey], a.Data[corev1.TLSPrivateKeyKey])
		if err != nil {
			s.t.Errorf("sim: cert-manager: %v", err)
			return nil
		}
		iss := must(anchor.NewIntermediate(issuer.CAParams{CommonName: "cert-manager issuer", NotBefore: now.Add(-time.Minute), TTL: 48 * time.Hour, MaxPathLenZero: true}))
		sec = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: manifest.IssuerSecret, Namespace: ns}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: iss.CertPEM(), corev1.TLSPrivateKeyKey: keyPEM(iss)}}
		if sec, err = secrets.Create(ctx, sec, metav1.CreateOptions{}); err != nil {
			s.t.Errorf("sim: cert-manager: %v", err)
			return nil
		}
	} else if err != nil {
		return nil
	}
	iss, err := issuer.Parse(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil
	}
	return iss
}

// publish writes a replica's report when it changed.
func (s *sim) publish(ctx context.Context, rep fleet.Report) {
	old, ok := s.replicas[rep.Replica]
	a, _ := json.Marshal(old)
	data, _ := json.Marshal(rep)
	if ok && string(a) == string(data) {
		return
	}
	s.replicas[rep.Replica] = rep
	cms := s.client.CoreV1().ConfigMaps(ns)
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: fleet.ConfigMapPrefix + rep.Replica, Namespace: ns, Labels: map[string]string{fleet.Label: "true"}},
		Data:       map[string]string{fleet.ConfigMapKey: string(data)},
	}
	var err error
	if ok {
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	} else {
		_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
	}
	if err != nil {
		s.t.Errorf("sim: publish %s: %v", rep.Replica, err)
	}
}

// lines is the rotator's output: it keeps the lines (without their time)
// and calls a hook once on the first line that contains its marker.
type lines struct {
	mu    sync.Mutex
	all   []string
	hooks map[string]func()
}

func (l *lines) on(marker string, f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hooks == nil {
		l.hooks = map[string]func(){}
	}
	l.hooks[marker] = f
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	var fire []func()
	for _, line := range strings.Split(strings.TrimSuffix(string(p), "\n"), "\n") {
		if _, rest, ok := strings.Cut(line, "  "); ok {
			line = rest
		}
		l.all = append(l.all, line)
		for m, f := range l.hooks {
			if strings.Contains(line, m) {
				fire = append(fire, f)
				delete(l.hooks, m)
			}
		}
	}
	l.mu.Unlock()
	for _, f := range fire {
		f()
	}
	return len(p), nil
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n")
}

// inOrder reports the first of want that does not follow the ones before
// it, each a part of a line; "" when all do.
func (l *lines) inOrder(want ...string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := 0
	for _, line := range l.all {
		if i < len(want) && strings.Contains(line, want[i]) {
			i++
		}
	}
	if i < len(want) {
		return want[i]
	}
	return ""
}
