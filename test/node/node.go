package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Config configures a Node.
type Config struct {
	// Client creates the Node object, reads volumes' sources, mints tokens
	// and writes pod status. Required.
	Client kubernetes.Interface
	// Name of the Node object (created by New, deleted by Close). Required.
	Name string
	// Binaries maps a container's image, or the first word of its command,
	// to the binary that runs it. Required.
	Binaries map[string]string
	// CA is the meshid-ca address on the machine's loopback. A container
	// argument --ca=... is pointed at a forwarder to it inside the pod, and
	// --ca-id=CAID is added next to it. Empty means none.
	CA, CAID string
	// ReadyTimeout bounds the wait for a pod's readiness probes; 0 means
	// 30 s.
	ReadyTimeout time.Duration
	// Pin, when set, is asked for every container: a command its binary
	// runs under (taskset -c N, which execs it) and more environment
	// (GOMAXPROCS=1), as the bench pins the servers it measures. Nil means
	// none.
	Pin func(container string) (prefix, env []string)
}

// Subnet of the pods of a node; the node holds the first address. Every
// node has its own namespaces, so nodes of parallel tests do not clash.
var Subnet = netip.MustParsePrefix("10.244.0.0/24")

// caForward is where a pod reaches the CA: a forwarder the node owns.
const caForward = "127.0.0.1:15012"

// Node is a running node.
type Node struct {
	cfg  Config
	ns   *netns
	addr netip.Addr
	dir  string

	mu   sync.Mutex
	next netip.Addr
	pods []*Pod
}

// New creates the node's namespace and bridge and its Node object. It
// needs root and ip(8).
func New(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Client == nil || cfg.Name == "" || cfg.Binaries == nil {
		return nil, errors.New("node: Config.Client, Name and Binaries are required")
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("node: needs root (network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, errors.New("node: needs ip(8) from iproute2")
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 30 * time.Second
	}
	dir, err := os.MkdirTemp("", "meshid-node-")
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	// Containers run as their own users and read their volumes here.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	ns, err := newNetns("node")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	n := &Node{cfg: cfg, ns: ns, dir: dir, addr: Subnet.Addr().Next()}
	n.next = n.addr.Next()
	fail := func(err error) (*Node, error) { n.Close(); return nil, err }
	// Copies every container's user can run, whatever the folders above
	// the originals allow.
	bins := map[string]string{}
	for name, path := range cfg.Binaries {
		copied, err := install(path, filepath.Join(dir, "bin"))
		if err != nil {
			return fail(err)
		}
		bins[name] = copied
	}
	n.cfg.Binaries = bins
	bits := strconv.Itoa(Subnet.Bits())
	for _, args := range [][]string{
		{"-n", ns.name, "link", "add", "br0", "type", "bridge"},
		{"-n", ns.name, "addr", "add", n.addr.String() + "/" + bits, "dev", "br0"},
		{"-n", ns.name, "link", "set", "br0", "up"},
	} {
		if err := ip(args...); err != nil {
			return fail(err)
		}
	}
	if _, err := cfg.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: cfg.Name},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.addr.String()}}},
	}, metav1.CreateOptions{}); err != nil {
		return fail(fmt.Errorf("node: create Node %s: %w", cfg.Name, err))
	}
	return n, nil
}

// Addr is the node's address (the pods' status.hostIP).
func (n *Node) Addr() netip.Addr { return n.addr }

// HTTPClient is a client whose connections start at the node's address,
// as the kubelet's probes and Prometheus would.
func (n *Node) HTTPClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: n.ns.DialContext, DisableKeepAlives: true}}
}

// DialContext connects from the node's address, as HTTPClient does.
func (n *Node) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return n.ns.DialContext(ctx, network, addr)
}

// Close stops every pod and deletes its Pod object, removes the
// namespaces and deletes the Node object; it is safe to call more than
// once.
func (n *Node) Close() {
	n.mu.Lock()
	pods := n.pods
	n.pods = nil
	n.mu.Unlock()
	zero := int64(0)
	for _, p := range pods {
		p.stop()
		// As a kubelet confirms a pod gone: without it the Pod would stay,
		// Terminating, and its address would still name it (the next node
		// hands out the same addresses).
		_ = n.cfg.Client.CoreV1().Pods(p.Namespace).Delete(context.Background(), p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	}
	if n.ns != nil {
		n.ns.remove()
		n.ns = nil
	}
	_ = n.cfg.Client.CoreV1().Nodes().Delete(context.Background(), n.cfg.Name, metav1.DeleteOptions{})
	os.RemoveAll(n.dir)
}

// Pod is a pod the node runs.
type Pod struct {
	Name, Namespace string
	IP              netip.Addr

	node  *Node
	ns    *netns
	dir   string
	procs []*proc
	lis   net.Listener // the CA forwarder

	caMu  sync.Mutex
	caCut bool                  // PartitionCA: the forwarder refuses
	caFwd map[net.Conn]struct{} // the forwarder's open connections, both ends
}

type proc struct {
	name string
	init bool // an init container: it is meant to exit
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Run runs pod (as stored by the API server, scheduled to this node) and
// returns once its readiness probes pass and its status says Ready.
func (n *Node) Run(ctx context.Context, pod *corev1.Pod) (*Pod, error) {
	if pod.Spec.NodeName != n.cfg.Name {
		return nil, fmt.Errorf("node: pod %s/%s is scheduled to %q, not %s", pod.Namespace, pod.Name, pod.Spec.NodeName, n.cfg.Name)
	}
	n.mu.Lock()
	addr := n.next
	n.next = addr.Next()
	idx := len(n.pods)
	n.mu.Unlock()
	ns, err := newNetns("pod")
	if err != nil {
		return nil, err
	}
	p := &Pod{Name: pod.Name, Namespace: pod.Namespace, IP: addr, node: n, ns: ns, dir: filepath.Join(n.dir, pod.Namespace+"_"+pod.Name)}
	n.mu.Lock()
	n.pods = append(n.pods, p)
	n.mu.Unlock()
	veth := "veth" + strconv.Itoa(idx)
	bits := strconv.Itoa(Subnet.Bits())
	for _, args := range [][]string{
		{"-n", n.ns.name, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns.name},
		{"-n", n.ns.name, "link", "set", veth, "master", "br0", "up"},
		{"-n", ns.name, "addr", "add", addr.String() + "/" + bits, "dev", "eth0"},
		{"-n", ns.name, "link", "set", "eth0", "up"},
		{"-n", ns.name, "route", "add", "default", "via", n.addr.String()},
	} {
		if err := ip(args...); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if n.cfg.CA != "" {
		if err := p.forwardCA(); err != nil {
			return nil, err
		}
	}
	mounts, err := p.volumes(ctx, pod)
	if err != nil {
		return nil, err
	}
	for _, c := range pod.Spec.InitContainers {
		pr, err := p.start(pod, c, mounts, true)
		if err != nil {
			return nil, err
		}
		<-pr.done
		if pr.err != nil {
			return nil, fmt.Errorf("node: init container %s of %s/%s: %v\n%s", c.Name, pod.Namespace, pod.Name, pr.err, readFile(pr.log))
		}
	}
	for _, c := range pod.Spec.Containers {
		if _, err := p.start(pod, c, mounts, false); err != nil {
			return nil, err
		}
	}
	if err := p.waitReady(ctx, pod); err != nil {
		return nil, err
	}
	return p, p.writeStatus(ctx)
}

// forwardCA listens inside the pod on caForward and carries each
// connection to the CA on the machine's loopback.
func (p *Pod) forwardCA() error {
	lis, err := p.ns.listen(caForward)
	if err != nil {
		return fmt.Errorf("node: CA forwarder: %w", err)
	}
	p.lis = lis
	p.caFwd = map[net.Conn]struct{}{}
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if !p.track(c) {
					return
				}
				defer p.untrack(c)
				up, err := net.DialTimeout("tcp", p.node.cfg.CA, 5*time.Second) // from the machine's namespace
				if err != nil || !p.track(up) {
					return
				}
				defer up.Close()
				defer p.untrack(up)
				splice(c, up)
			}()
		}
	}()
	return nil
}

// splice copies c to up and up to c until both are done, passing c's
// half-close on.
func splice(c, up net.Conn) {
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(up, c)
		if cw, ok := up.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		close(done)
	}()
	_, _ = io.Copy(c, up)
	<-done
}

// Forward listens on the machine's loopback and carries each connection
// to addr from the node's address: how a command run on this machine
// (meshid check, meshid verify) reaches a pod, as from a host on the pod
// network. It returns the address and a func that stops listening.
func (n *Node) Forward(ctx context.Context, addr string) (string, func(), error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("node: forward to %s: %w", addr, err)
	}
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := n.DialContext(ctx, "tcp", addr)
				if err != nil {
					return
				}
				defer up.Close()
				splice(c, up)
			}()
		}
	}()
	return lis.Addr().String(), func() { lis.Close() }, nil
}

// track records a connection of the CA forwarder; false means the pod is
// cut off from the CA and c must be closed.
func (p *Pod) track(c net.Conn) bool {
	p.caMu.Lock()
	defer p.caMu.Unlock()
	if p.caCut {
		c.Close()
		return false
	}
	p.caFwd[c] = struct{}{}
	return true
}

func (p *Pod) untrack(c net.Conn) {
	p.caMu.Lock()
	defer p.caMu.Unlock()
	delete(p.caFwd, c)
}

// PartitionCA cuts the pod off from the CA (cut true: every connection
// through the forwarder is closed, and new ones are closed as they come)
// or lets it reach the CA again (cut false), as a network partition
// between the pod and meshid-ca would.
func (p *Pod) PartitionCA(cut bool) {
	p.caMu.Lock()
	defer p.caMu.Unlock()
	p.caCut = cut
	if !cut {
		return
	}
	for c := range p.caFwd {
		c.Close()
	}
	clear(p.caFwd)
}

// volumes fills the pod's token and ConfigMap volumes, one folder each,
// and returns the folder of each volume by name.
func (p *Pod) volumes(ctx context.Context, pod *corev1.Pod) (map[string]string, error) {
	client := p.node.cfg.Client
	dirs := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		dir := filepath.Join(p.dir, "volumes", v.Name)
		files := map[string][]byte{}
		switch {
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if src.ServiceAccountToken == nil {
					continue
				}
				sa := pod.Spec.ServiceAccountName
				if sa == "" {
					sa = "default"
				}
				tr, err := client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
					Audiences: []string{src.ServiceAccountToken.Audience}, ExpirationSeconds: src.ServiceAccountToken.ExpirationSeconds,
					BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
				}}, metav1.CreateOptions{})
				if err != nil {
					return nil, fmt.Errorf("node: token for %s/%s: %w", pod.Namespace, sa, err)
				}
				files[src.ServiceAccountToken.Path] = []byte(tr.Status.Token)
			}
		case v.ConfigMap != nil:
			cm, err := client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("node: ConfigMap %s/%s of volume %s: %w", pod.Namespace, v.ConfigMap.Name, v.Name, err)
			}
			for _, item := range v.ConfigMap.Items {
				files[item.Path] = []byte(cm.Data[item.Key])
			}
		case v.EmptyDir != nil:
			// Writable by every container's user, as kubelet's are (0777).
			if err := os.MkdirAll(dir, 0o777); err != nil {
				return nil, fmt.Errorf("node: %w", err)
			}
			if err := os.Chmod(dir, 0o777); err != nil {
				return nil, fmt.Errorf("node: %w", err)
			}
			dirs[v.Name] = dir
			continue
		default:
			continue // the API server's own token volume, and volumes no test needs
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
		for name, data := range files {
			// Readable by the pod's users, as kubelet's projections are (0644
			// by default); the folder is the pod's alone on this machine.
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
				return nil, fmt.Errorf("node: %w", err)
			}
		}
		dirs[v.Name] = dir
	}
	return dirs, nil
}

// start runs container c of pod inside the pod's namespace.
func (p *Pod) start(pod *corev1.Pod, c corev1.Container, volumes map[string]string, init bool) (*proc, error) {
	bin, args := p.node.cfg.Binaries[c.Image], c.Args
	if len(c.Command) > 0 {
		bin, args = p.node.cfg.Binaries[c.Command[0]], append(c.Command[1:len(c.Command):len(c.Command)], c.Args...)
	}
	if bin == "" {
		return nil, fmt.Errorf("node: no binary for container %s (image %s, command %v)", c.Name, c.Image, c.Command)
	}
	// The longest mount path first: one may be a prefix of another
	// (/var/run/meshid and /var/run/meshid-redirect).
	mountsLongestFirst := slices.Clone(c.VolumeMounts)
	slices.SortStableFunc(mountsLongestFirst, func(a, b corev1.VolumeMount) int { return len(b.MountPath) - len(a.MountPath) })
	var out []string
	for _, a := range args {
		for _, m := range mountsLongestFirst {
			if dir, ok := volumes[m.Name]; ok {
				a = strings.ReplaceAll(a, m.MountPath, dir)
			}
		}
		if _, ok := strings.CutPrefix(a, "--ca="); ok && p.node.cfg.CA != "" {
			out = append(out, "--ca="+caForward, "--ca-id="+p.node.cfg.CAID)
			continue
		}
		out = append(out, a)
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	for _, e := range c.Env {
		v := e.Value
		if f := e.ValueFrom; f != nil && f.FieldRef != nil {
			v = map[string]string{
				"metadata.name": pod.Name, "metadata.namespace": pod.Namespace, "spec.serviceAccountName": pod.Spec.ServiceAccountName,
				"status.hostIP": p.node.addr.String(), "status.podIP": p.IP.String(),
			}[f.FieldRef.FieldPath]
		}
		env = append(env, e.Name+"="+v)
	}
	pr := &proc{name: c.Name, init: init, log: filepath.Join(p.dir, c.Name+".log"), done: make(chan struct{})}
	logFile, err := os.OpenFile(pr.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	fmt.Fprintf(logFile, "node: exec %s %s (env %s)\n", bin, strings.Join(out, " "), strings.Join(env[1:], " "))
	if p.node.cfg.Pin != nil {
		prefix, more := p.node.cfg.Pin(c.Name)
		env = append(env, more...)
		if len(prefix) > 0 {
			bin, out = prefix[0], append(append(slices.Clone(prefix[1:]), bin), out...)
		}
	}
	pr.cmd = exec.Command(bin, out...)
	pr.cmd.Env, pr.cmd.Dir = env, p.dir
	pr.cmd.Stdout, pr.cmd.Stderr = logFile, logFile
	pr.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if sc := c.SecurityContext; sc != nil && sc.RunAsUser != nil && *sc.RunAsUser != 0 {
		uid := uint32(*sc.RunAsUser)
		pr.cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: uid}
	}
	started := make(chan error, 1)
	// The thread that starts the process waits for it too: a child's
	// parent-death signal follows the thread that forked it.
	go func() {
		defer logFile.Close()
		err := p.ns.do(func() error {
			if err := pr.cmd.Start(); err != nil {
				return err
			}
			started <- nil
			pr.err = pr.cmd.Wait()
			close(pr.done)
			return nil
		})
		if err != nil {
			started <- fmt.Errorf("node: start %s of %s/%s: %w", c.Name, pod.Namespace, pod.Name, err)
		}
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	p.procs = append(p.procs, pr)
	return pr, nil
}

// PID is the process of container name, 0 when there is none.
func (p *Pod) PID(name string) int {
	for _, pr := range p.procs {
		if pr.name == name && !pr.init {
			return pr.cmd.Process.Pid
		}
	}
	return 0
}

// waitReady runs every HTTP readiness probe of pod from the node's address
// until each answers 2xx.
func (p *Pod) waitReady(ctx context.Context, pod *corev1.Pod) error {
	client := p.node.HTTPClient()
	deadline := time.Now().Add(p.node.cfg.ReadyTimeout)
	for _, c := range pod.Spec.Containers {
		pr := c.ReadinessProbe
		if pr == nil || pr.HTTPGet == nil {
			continue
		}
		port := pr.HTTPGet.Port.IntValue()
		for _, cp := range c.Ports {
			if cp.Name == pr.HTTPGet.Port.StrVal && cp.Name != "" {
				port = int(cp.ContainerPort)
			}
		}
		url := fmt.Sprintf("http://%s%s", netip.AddrPortFrom(p.IP, uint16(port)), pr.HTTPGet.Path)
		last := "no answer"
		for {
			if err := p.exited(); err != nil {
				return err
			}
			resp, err := client.Get(url)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode < 300 {
					break
				}
				last = resp.Status
			} else {
				last = err.Error()
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("node: %s/%s container %s not ready after %s: %s: %s\n%s", pod.Namespace, pod.Name, c.Name, p.node.cfg.ReadyTimeout, url, last, p.Logs())
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond): // the kubelet's probes are periodic too
			}
		}
	}
	return nil
}

// exited reports a container that stopped.
func (p *Pod) exited() error {
	for _, pr := range p.procs {
		select {
		case <-pr.done:
			if pr.init {
				continue
			}
			return fmt.Errorf("node: container %s of %s/%s exited: %v\n%s", pr.name, p.Namespace, p.Name, pr.err, readFile(pr.log))
		default:
		}
	}
	return nil
}

// writeStatus tells the API server the pod runs and is ready.
func (p *Pod) writeStatus(ctx context.Context) error {
	pods := p.node.cfg.Client.CoreV1().Pods(p.Namespace)
	pod, err := pods.Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	now := metav1.Now()
	pod.Status.Phase = corev1.PodRunning
	pod.Status.HostIP, pod.Status.HostIPs = p.node.addr.String(), []corev1.HostIP{{IP: p.node.addr.String()}}
	pod.Status.PodIP, pod.Status.PodIPs = p.IP.String(), []corev1.PodIP{{IP: p.IP.String()}}
	pod.Status.StartTime = &now
	pod.Status.Conditions = nil
	for _, c := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: c, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	if _, err := pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("node: status of %s/%s: %w", p.Namespace, p.Name, err)
	}
	return nil
}

// Exec runs name with args inside the pod's namespace, as root (not the
// proxy's user: its connections are redirected like the app's), and
// returns its output.
func (p *Pod) Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	var out []byte
	err := p.ns.do(func() error {
		var err error
		out, err = exec.CommandContext(ctx, name, args...).CombinedOutput()
		return err
	})
	return out, err
}

// DialContext dials from inside the pod as root, as an unmodified app
// would: the redirect takes the connection to the pod's proxy.
func (p *Pod) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return p.ns.DialContext(ctx, network, addr)
}

// Logs returns every container's log.
func (p *Pod) Logs() string {
	var b strings.Builder
	for _, pr := range p.procs {
		fmt.Fprintf(&b, "--- %s/%s %s:\n%s\n", p.Namespace, p.Name, pr.name, readFile(pr.log))
	}
	return b.String()
}

// Logs returns every pod's logs.
func (n *Node) Logs() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var b strings.Builder
	for _, p := range n.pods {
		b.WriteString(p.Logs())
	}
	return b.String()
}

func (p *Pod) stop() {
	if p.lis != nil {
		p.lis.Close()
	}
	for _, pr := range p.procs {
		select {
		case <-pr.done:
			continue
		default:
		}
		_ = pr.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-pr.done:
		case <-time.After(10 * time.Second):
			_ = pr.cmd.Process.Kill()
			<-pr.done
		}
	}
	p.ns.remove()
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// install copies the binary at path into dir, executable by everyone.
func install(path, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("node: %w", err)
	}
	to := filepath.Join(dir, filepath.Base(path))
	if _, err := os.Stat(to); err == nil {
		return to, nil
	}
	src, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("node: %w", err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		return "", fmt.Errorf("node: %w", err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return "", fmt.Errorf("node: copy %s: %w", path, err)
	}
	return to, dst.Close()
}
