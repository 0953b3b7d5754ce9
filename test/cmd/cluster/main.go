// Command cluster runs a local control plane in the background for
// `make cluster` and stops it for `make cluster-down`.
//
//	cluster up   --dir DIR --bin BIN   start (or find running); prints the kubeconfig path last
//	cluster down --dir DIR             stop what up started
//	cluster serve --dir DIR --bin BIN  run in the foreground (what up starts)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshid/meshid/test/cluster"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", ".cluster", "state folder")
	bin := fs.String("bin", os.Getenv(cluster.BinDirEnv), "folder of the control-plane binaries")
	_ = fs.Parse(os.Args[2:])
	abs, err := filepath.Abs(*dir)
	if err != nil {
		fail(err)
	}
	switch os.Args[1] {
	case "up":
		err = up(abs, *bin)
	case "down":
		err = down(abs)
	case "serve":
		err = serve(abs, *bin)
	default:
		usage()
	}
	if err != nil {
		fail(err)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: cluster up|down|serve --dir DIR [--bin BIN]")
	os.Exit(2)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "cluster:", err)
	os.Exit(1)
}

func pidFile(dir string) string    { return filepath.Join(dir, "cluster.pid") }
func kubeconfig(dir string) string { return filepath.Join(dir, "kubeconfig") }
func readyFile(dir string) string  { return filepath.Join(dir, "ready") }

// running returns the pid of a live supervisor for dir, or 0.
func running(dir string) int {
	b, err := os.ReadFile(pidFile(dir))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

func up(dir, bin string) error {
	if pid := running(dir); pid != 0 {
		fmt.Fprintf(os.Stderr, "control plane already running (pid %d)\n", pid)
		fmt.Println(kubeconfig(dir))
		return nil
	}
	if bin == "" {
		return errors.New("--bin is required (test/controlplane/install.sh prints it)")
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
		return err
	}
	_ = os.Remove(readyFile(dir))
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logPath := filepath.Join(dir, "logs", "supervisor.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(self, "serve", "--dir", dir, "--bin", bin)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fmt.Fprintf(os.Stderr, "starting etcd and kube-apiserver (logs in %s)\n", filepath.Join(dir, "logs"))
	deadline := time.After(2 * time.Minute)
	for {
		if _, err := os.Stat(readyFile(dir)); err == nil {
			fmt.Fprintf(os.Stderr, "control plane ready (pid %d); stop it with make cluster-down\n", cmd.Process.Pid)
			fmt.Println(kubeconfig(dir))
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("the control plane did not start (%v); see %s", err, logPath)
		case <-deadline:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			return fmt.Errorf("the control plane was not ready after 2 minutes; see %s", logPath)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func serve(dir, bin string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := os.WriteFile(pidFile(dir), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return err
	}
	defer os.Remove(pidFile(dir))
	c, err := cluster.Start(ctx, cluster.Config{BinDir: bin, Dir: dir, ControllerManager: true})
	if err != nil {
		return err
	}
	defer c.Stop()
	if err := os.WriteFile(readyFile(dir), []byte(c.Server+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(readyFile(dir))
	fmt.Printf("control plane ready at %s; kubeconfig %s\n", c.Server, c.Kubeconfig)
	<-ctx.Done()
	fmt.Println("stopping")
	return nil
}

func down(dir string) error {
	pid := running(dir)
	if pid == 0 {
		fmt.Fprintln(os.Stderr, "no control plane is running for", dir)
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return err
	}
	for range 300 {
		if syscall.Kill(pid, 0) != nil {
			fmt.Fprintf(os.Stderr, "control plane stopped (pid %d)\n", pid)
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("pid %d still running after 30 s", pid)
}
