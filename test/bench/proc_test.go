package bench

import (
	"os"
	"path/filepath"
	"testing"
)

func TestStatusField(t *testing.T) {
	status := "Name:\tmeshid-ca\nVmPeak:\t 2000000 kB\nVmRSS:\t   51234 kB\nThreads:\t9\nvoluntary_ctxt_switches:\t150\nnonvoluntary_ctxt_switches:\t7\n"
	path := filepath.Join(t.TempDir(), "status")
	if err := os.WriteFile(path, []byte(status), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		names []string
		want  int64
	}{
		{[]string{"VmRSS:"}, 51234},
		{[]string{"voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"}, 157},
		{[]string{"Threads:"}, 9},
	} {
		got, err := statusField(path, c.names...)
		if err != nil || got != c.want {
			t.Errorf("statusField(%v) = %d, %v; want %d", c.names, got, err, c.want)
		}
	}
	if _, err := statusField(path, "VmSwap:"); err == nil {
		t.Error("statusField found a line that is not there")
	}
	if _, err := statusField(path, "Name:"); err == nil {
		t.Error("statusField read a name as a number")
	}
}

func TestProcessRSS(t *testing.T) {
	rss, err := ProcessRSS(os.Getpid())
	if err != nil || rss < 1<<20 {
		t.Errorf("ProcessRSS(self) = %d, %v; want at least 1 MiB", rss, err)
	}
}
