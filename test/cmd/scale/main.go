// Command scale is `make scale`: a fleet simulator. It starts a control
// plane (etcd, kube-apiserver), several meshid-ca replicas on loopback
// ports, and N simulated proxies, each a real gRPC client over mTLS with a
// certificate of its own issued by meshid-ca through Certify with a real
// service-account token, holding a WatchBundle and a WatchPolicy stream and
// sending ReportStatus heartbeats. It measures what a CA replica spends
// per proxy, how long a new bundle takes to reach every stream, what the
// fleet reports write to the API server, and how long a restarted
// replica's share takes to reconnect elsewhere; it prints the figures as
// Markdown. Not a test: it never fails on a number.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const usage = `scale simulates a fleet of meshid proxies against several meshid-ca
replicas on a real kube-apiserver, and prints what it measured as Markdown.

Usage:
  scale [flags]

It needs meshid-ca (--bin, from make build) and the control-plane binaries
(test/controlplane/install.sh). Every address is on loopback: the proxies
connect from 127.10.0.0 upwards, one address each.

Flags:
`

type options struct {
	bin             string
	proxies         int
	replicas        int
	serviceAccounts int
	duration        time.Duration
	deadline        time.Duration
	heartbeat       time.Duration
	policy          bool
	out             string
	keep            bool
	caArgs          []string
}

func main() {
	log.SetFlags(log.Ltime)
	log.SetPrefix("scale: ")
	o := options{}
	fs := flag.NewFlagSet("scale", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	fs.StringVar(&o.bin, "bin", "bin", "folder of meshid-ca (make build)")
	fs.IntVar(&o.proxies, "proxies", 1000, "simulated proxies")
	fs.IntVar(&o.replicas, "replicas", 4, "meshid-ca replicas")
	fs.IntVar(&o.serviceAccounts, "service-accounts", 300, "service accounts the proxies run as (one pod each; many proxies share one, as a Deployment's replicas do)")
	fs.DurationVar(&o.duration, "duration", time.Minute, "length of the steady-state window (heartbeats, fleet reports) that CPU and API-server writes are measured over")
	fs.DurationVar(&o.deadline, "deadline", 40*time.Minute, "hard limit for the whole run; past it the run stops and exits non-zero")
	fs.DurationVar(&o.heartbeat, "heartbeat", 10*time.Second, "ReportStatus interval of each proxy (meshid-proxy's is 10s)")
	fs.BoolVar(&o.policy, "policy", true, "hold a WatchPolicy stream per proxy too (meshid-ca --watch-policies)")
	fs.StringVar(&o.out, "out", "", "also write the Markdown to this file")
	fs.BoolVar(&o.keep, "keep", false, "keep the work folder (logs) after the run")
	fs.Func("ca-flag", "a further meshid-ca flag, e.g. --ca-flag=--max-fleet-instances=-1 (repeatable)", func(v string) error {
		if !strings.HasPrefix(v, "--") {
			return fmt.Errorf("%q is not a flag: spell it --name=value", v)
		}
		o.caArgs = append(o.caArgs, v)
		return nil
	})
	err := fs.Parse(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err == nil {
		err = o.validate()
	}
	if err == nil {
		err = run(o)
	}
	if err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func (o options) validate() error {
	var errs []error
	if o.proxies < 1 || o.proxies > maxProxies {
		errs = append(errs, fmt.Errorf("--proxies %d: want 1 to %d", o.proxies, maxProxies))
	}
	if o.replicas < 1 || o.replicas > 64 {
		errs = append(errs, fmt.Errorf("--replicas %d: want 1 to 64", o.replicas))
	}
	if o.serviceAccounts < 1 || o.serviceAccounts > 10000 {
		errs = append(errs, fmt.Errorf("--service-accounts %d: want 1 to 10000", o.serviceAccounts))
	}
	if o.duration < 10*time.Second || o.duration >= o.deadline {
		errs = append(errs, fmt.Errorf("--duration %s: want at least 10s and less than --deadline %s", o.duration, o.deadline))
	}
	if o.heartbeat < time.Second {
		errs = append(errs, fmt.Errorf("--heartbeat %s: want at least 1s", o.heartbeat))
	}
	if _, err := os.Stat(filepath.Join(o.bin, "meshid-ca")); err != nil {
		errs = append(errs, fmt.Errorf("meshid-ca not found in --bin %s: run make build first", o.bin))
	}
	return errors.Join(errs...)
}

func run(o options) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.deadline)
	defer cancel()
	// The hard deadline: if stopping hangs, exit anyway (children die
	// with this process).
	watchdog := time.AfterFunc(o.deadline+time.Minute, func() {
		log.Print("hard deadline passed and the run did not stop; exiting")
		os.Exit(2)
	})
	defer watchdog.Stop()

	if err := raiseFileLimit(uint64(o.proxies + 1000)); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "meshid-scale-")
	if err != nil {
		return err
	}
	if o.keep {
		log.Printf("work folder (kept): %s", work)
	} else {
		defer os.RemoveAll(work)
	}
	s := &sim{o: o, work: work}
	defer s.stop()
	started := time.Now()
	if err := s.run(ctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w (stopped at --deadline %s or by a signal)", err, o.deadline)
		}
		return err
	}
	md := s.markdown(time.Since(started))
	fmt.Print(md)
	if o.out != "" {
		return os.WriteFile(o.out, []byte(md), 0o644)
	}
	return nil
}

// raiseFileLimit raises this process's open-file limit (soft and hard) to
// want, capped at the kernel's fs.nr_open; where the hard limit cannot be
// raised (no CAP_SYS_RESOURCE), to the hard limit, and it fails if that
// is below want. The CA replicas inherit the hard limit, and Go raises a
// program's soft limit to its hard one.
func raiseFileLimit(want uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		var nrOpen uint64
		if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &nrOpen); err == nil {
			want = min(want, nrOpen)
		}
	}
	if lim.Cur >= want {
		return nil
	}
	raised := syscall.Rlimit{Cur: want, Max: max(lim.Max, want)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
		log.Printf("open-file limit raised to %d", want)
		return nil
	}
	if lim.Max < want {
		return fmt.Errorf("--proxies needs about %d open files in this process, but its hard limit is %d and raising it was refused (it needs root with CAP_SYS_RESOURCE): lower --proxies", want, lim.Max)
	}
	lim.Cur = lim.Max
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}
