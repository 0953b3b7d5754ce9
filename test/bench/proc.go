package bench

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is a process under measurement, pinned to CPUs with taskset.
type Proc struct {
	Name string
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Pinned describes where a process runs: CPUs for taskset ("" for any) and
// GOMAXPROCS for Go programs (0 leaves it alone).
type Pinned struct {
	CPUs       string
	GOMAXPROCS int
}

// Command builds the command for bin args under p, with extra environment.
func (p Pinned) Command(bin string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if p.CPUs != "" {
		cmd = exec.Command("taskset", append([]string{"-c", p.CPUs, bin}, args...)...)
	} else {
		cmd = exec.Command(bin, args...)
	}
	cmd.Env = os.Environ()
	if p.GOMAXPROCS > 0 {
		cmd.Env = append(cmd.Env, "GOMAXPROCS="+strconv.Itoa(p.GOMAXPROCS))
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Start runs bin under p with its output in dir/name.log.
func (p Pinned) Start(dir, name, bin string, args ...string) (*Proc, error) {
	log := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := p.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	proc := &Proc{Name: name, Log: log, cmd: cmd, done: make(chan struct{})}
	go func() {
		proc.err = cmd.Wait()
		f.Close()
		close(proc.done)
	}()
	return proc, nil
}

// PID is the process id (taskset execs the program, so it is the program's).
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Attach is a Proc for a process something else started and stops (a
// container of a test node): for RSS and Usage only, never Stop.
func Attach(name string, pid int) *Proc {
	proc, _ := os.FindProcess(pid) // never fails on Linux
	return &Proc{Name: name, cmd: &exec.Cmd{Process: proc}, done: make(chan struct{})}
}

// Exited reports whether the process has ended, and how.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM, then SIGKILL after 5 s, and waits.
func (p *Proc) Stop() { p.StopWithin(5 * time.Second) }

// StopWithin sends SIGTERM, then SIGKILL after grace (as the kubelet does
// after a pod's terminationGracePeriodSeconds), and waits.
func (p *Proc) StopWithin(grace time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// RSS is the resident memory of the process and its children, in bytes.
func (p *Proc) RSS() (int64, error) {
	var total int64
	err := eachInTree(p.PID(), func(pid int) error {
		n, err := rss(pid)
		total += n
		return err
	})
	return total, err
}

// Usage is what a process tree has used so far.
type Usage struct {
	CPU      time.Duration // user and system time
	Switches int64         // context switches, voluntary and not, over every thread
}

// Sub is u minus an earlier reading.
func (u Usage) Sub(earlier Usage) Usage {
	return Usage{CPU: u.CPU - earlier.CPU, Switches: u.Switches - earlier.Switches}
}

// Usage is the CPU time and context switches of the process and its
// children so far (nginx's master and worker, say).
func (p *Proc) Usage() (Usage, error) {
	var u Usage
	err := eachInTree(p.PID(), func(pid int) error {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return err
		}
		// Fields after the command (which may hold spaces): utime and
		// stime are the 12th and 13th, in clock ticks of 1/100 s.
		_, rest, _ := strings.Cut(string(stat), ") ")
		f := strings.Fields(rest)
		if len(f) < 13 {
			return fmt.Errorf("/proc/%d/stat: too few fields", pid)
		}
		for _, s := range f[11:13] {
			ticks, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return err
			}
			u.CPU += time.Duration(ticks) * 10 * time.Millisecond
		}
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
		if err != nil {
			return err
		}
		for _, t := range tasks {
			n, err := statusField(t, "voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")
			if errors.Is(err, os.ErrNotExist) {
				continue // the thread ended since the listing
			}
			if err != nil {
				return err
			}
			u.Switches += n
		}
		return nil
	})
	return u, err
}

// eachInTree calls f for process pid and each of its descendants. An error
// of pid's is returned; a descendant's is not (it may have just exited).
func eachInTree(pid int, f func(pid int) error) error {
	if err := f(pid); err != nil {
		return err
	}
	kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, k := range strings.Fields(string(kids)) {
		if kid, err := strconv.Atoi(k); err == nil {
			_ = eachInTree(kid, f)
		}
	}
	return nil
}

// statusField sums the values of the named fields of a /proc status file.
func statusField(path string, names ...string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total int64
	found := 0
	s := bufio.NewScanner(f)
	for s.Scan() {
		for _, name := range names {
			if rest, ok := strings.CutPrefix(s.Text(), name); ok {
				v, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				if err != nil {
					return 0, fmt.Errorf("%s: %s: %w", path, name, err)
				}
				total += v
				found++
			}
		}
	}
	if found < len(names) {
		return 0, fmt.Errorf("%s: no %s line", path, strings.Join(names, " or "))
	}
	return total, s.Err()
}

// ProcessRSS is the resident memory of process pid, in bytes.
func ProcessRSS(pid int) (int64, error) { return rss(pid) }

func rss(pid int) (int64, error) {
	kb, err := statusField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
	return kb << 10, err
}

// WaitFor polls cond every 50 ms until it returns nil, the process exits,
// or timeout passes.
func (p *Proc) WaitFor(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if done, exitErr := p.Exited(); done {
			return fmt.Errorf("%s exited (%v); see %s", p.Name, exitErr, p.Log)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not ready after %s: %w; see %s", p.Name, timeout, err, p.Log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
