package cli

import (
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is the release, set by the Makefile with
// -ldflags "-X github.com/meshid/meshid/cmd/internal/cli.version=$(git describe --tags --always --dirty)".
var version string

// DevVersion is the version of a binary built without the Makefile's
// -ldflags (go build, go run, go test).
const DevVersion = "dev"

// Build describes the binary that is running.
type Build struct {
	// Version is the release (git describe), or DevVersion.
	Version string `json:"version"`
	// Commit is the VCS revision the binary was built from ("" when go
	// build did not record it), and Modified says the work tree had
	// uncommitted changes.
	Commit   string `json:"commit,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	// Go is the Go release it was built with.
	Go string `json:"go"`
}

// BuildInfo reads the version set at link time and what the Go toolchain
// recorded in the binary (vcs.revision, vcs.modified).
func BuildInfo() Build {
	b := Build{Version: version, Go: runtime.Version()}
	if b.Version == "" {
		b.Version = DevVersion
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	b.Go = info.GoVersion
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Commit = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

// String is the one line --version prints: "v1.2.0 (commit 0123abcd, go1.26.11)".
func (b Build) String() string {
	commit := b.Commit
	if commit == "" {
		commit = "unknown"
	} else if len(commit) > 12 {
		commit = commit[:12]
	}
	if b.Modified {
		commit += ", modified"
	}
	return fmt.Sprintf("%s (commit %s, %s)", b.Version, commit, b.Go)
}

// LogStart logs the line a daemon starts with: its name and build.
func LogStart(log *slog.Logger, name string) {
	b := BuildInfo()
	log.Info(name+" starting", "version", b.Version, "commit", b.Commit, "modified", b.Modified, "go", b.Go)
}

// SetVersion gives cmd a --version flag that prints "NAME VERSION (commit
// ..., go...)".
func SetVersion(cmd *cobra.Command) {
	cmd.Version = BuildInfo().String()
	cmd.SetVersionTemplate("{{.Name}} {{.Version}}\n")
}
