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
func (p *Proc) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// RSS is the resident memory of the process and its children, in bytes.
func (p *Proc) RSS() (int64, error) { return treeRSS(p.PID()) }

// treeRSS is the resident memory of process pid and its descendants, in
// bytes (nginx's master and worker, say).
func treeRSS(pid int) (int64, error) {
	total, err := rss(pid)
	if err != nil {
		return 0, err
	}
	kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, f := range strings.Fields(string(kids)) {
		if kid, err := strconv.Atoi(f); err == nil {
			if n, err := treeRSS(kid); err == nil {
				total += n
			}
		}
	}
	return total, nil
}

func rss(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS line")
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
