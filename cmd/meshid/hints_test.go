package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshid/meshid/ca/manifest"
	"github.com/meshid/meshid/cmd/meshid/internal/check"
	"github.com/meshid/meshid/cmd/meshid/internal/check/checktest"
)

// meshidCommand is a command in backquotes that a hint tells to run.
var meshidCommand = regexp.MustCompile("`(meshid [^`]*)`")

// parseCommand parses line ("meshid VERB ... --flags") with this CLI's own
// root, as cobra would run it: the command must exist, take those flags
// and arguments, and pass its own validation (PreRunE), without running.
func parseCommand(line string) error {
	if strings.ContainsAny(line, `'"\$|;&`) {
		return fmt.Errorf("%q: quoting or shell syntax; this test splits on spaces only", line)
	}
	args := strings.Fields(line)[1:]
	f := &fakeCluster{}
	root := newRootCommand(f.connect, strings.NewReader(""))
	cmd, rest, err := root.Find(args)
	if err != nil {
		return err
	}
	if cmd == root {
		return fmt.Errorf("%q names no meshid command", line)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return fmt.Errorf("%q: %w", line, err)
	}
	if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
		return fmt.Errorf("%q: %w", line, err)
	}
	if cmd.PreRunE != nil {
		if err := cmd.PreRunE(cmd, cmd.Flags().Args()); err != nil {
			return fmt.Errorf("%q: %w", line, err)
		}
	}
	if len(f.calls) != 0 {
		return fmt.Errorf("%q: parsing it talked to the cluster", line)
	}
	return nil
}

// TestCheckHintsParse: every `meshid ...` command that a hint of check
// names, in every row check's unit tests produce (checktest.Cases, run with
// a --kubeconfig so that hints repeat it), parses with this CLI's own
// cobra root.
func TestCheckHintsParse(t *testing.T) {
	t.Run("control", func(t *testing.T) {
		// What check used to print: rotate-anchor has no --emergency.
		if err := parseCommand("meshid rotate-anchor --emergency"); err == nil || !strings.Contains(err.Error(), "unknown flag: --emergency") {
			t.Fatalf("parseCommand accepted the old hint: %v", err)
		}
		if err := parseCommand("meshid rotate-anchor start --emergency"); err == nil || !strings.Contains(err.Error(), "start needs a new anchor") {
			t.Fatalf("parseCommand accepted a start without its anchor: %v", err)
		}
	})
	seen := map[string][]string{} // command -> the cases that printed it
	for _, tt := range checktest.Cases() {
		w := checktest.New(t, checktest.Now)
		if tt.Mod != nil {
			tt.Mod(t, w)
		}
		o := w.Options()
		o.Output, o.Cluster.Kubeconfig = "json", "/etc/meshid/admin.kubeconfig"
		var out bytes.Buffer
		if err := check.Run(context.Background(), o, &out); err != nil && err != check.ErrProblems {
			t.Fatalf("%s: %v", tt.Name, err)
		}
		var doc struct {
			Checks []struct{ Check, Hint string } `json:"checks"`
		}
		if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
			t.Fatalf("%s: %v", tt.Name, err)
		}
		for _, row := range doc.Checks {
			for _, m := range meshidCommand.FindAllStringSubmatch(row.Hint, -1) {
				seen[m[1]] = append(seen[m[1]], tt.Name+": "+row.Check)
			}
		}
	}
	if len(seen) < 5 {
		t.Fatalf("only %d meshid commands in the hints: %v", len(seen), seen)
	}
	var lines []string
	for line := range seen {
		lines = append(lines, line)
	}
	slices.Sort(lines)
	for _, line := range lines {
		if !strings.Contains(line, " --kubeconfig /etc/meshid/admin.kubeconfig") || !strings.Contains(line, " -n meshid") {
			t.Errorf("%q (in %s) does not name the namespace and kubeconfig check was given", line, seen[line][0])
		}
		if err := parseCommand(line); err != nil {
			t.Errorf("in %s: %v", strings.Join(seen[line], "; "), err)
		}
	}
	t.Logf("%d meshid commands parsed:\n%s", len(lines), strings.Join(lines, "\n"))
}

// TestAlertCommandsParse: every `meshid ...` command that an alert rule
// meshid install renders tells to run parses with this CLI's own root and
// names the install's namespace.
func TestAlertCommandsParse(t *testing.T) {
	secret := manifest.Options{Namespace: "mesh-prod", Image: "meshid:test", BundlePEM: []byte("anchors"), IssuerCertPEM: []byte("c"), IssuerKeyPEM: []byte("k")}
	certManager := manifest.Options{Namespace: "mesh-prod", Image: "meshid:test", BundlePEM: []byte("anchors"),
		CertManager: &manifest.CertManager{AnchorCertPEM: []byte("c"), AnchorKeyPEM: []byte("k")}}
	for name, o := range map[string]manifest.Options{"secret": secret, "cert-manager": certManager} {
		objs, err := manifest.Render(o)
		if err != nil {
			t.Fatal(err)
		}
		var rules string
		for _, o := range objs {
			if cm, ok := o.(*corev1.ConfigMap); ok && cm.Name == manifest.AlertsConfigMap {
				for _, v := range cm.Data {
					rules += v
				}
			}
		}
		lines := meshidCommand.FindAllStringSubmatch(rules, -1)
		if len(lines) < 3 {
			t.Fatalf("%s: only %d meshid commands in the alert rules:\n%s", name, len(lines), rules)
		}
		for _, m := range lines {
			if !strings.Contains(m[1], " -n mesh-prod") {
				t.Errorf("%s: %q does not name the install's namespace", name, m[1])
			}
			if err := parseCommand(m[1]); err != nil {
				t.Errorf("%s alert rule: %v", name, err)
			}
		}
	}
}
