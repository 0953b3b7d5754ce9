package bundle_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshid/meshid/bundle"
)

// TestParseFixtures parses the PEM files in testdata/, named after their
// defect (test/fixtures_test.go generates them).
func TestParseFixtures(t *testing.T) {
	tests := []struct {
		files   []string // concatenated
		anchors int      // 0: refused
		err     string
	}{
		{files: []string{"anchor.pem"}, anchors: 1},
		{files: []string{"anchor-no-key-usage.pem"}, anchors: 1},
		{files: []string{"anchor.pem", "anchor-no-key-usage.pem"}, anchors: 2},
		{files: []string{"wrong-anchor-ca-false.pem"}, err: "not a CA certificate"},
		{files: []string{"wrong-anchor-no-cert-sign.pem"}, err: "keyCertSign"},
		{files: []string{"anchor.pem", "wrong-anchor-ca-false.pem"}, err: "not a CA certificate"},
		{files: []string{"anchor.pem", "anchor.pem"}, err: "repeats an earlier anchor"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.files, "+"), func(t *testing.T) {
			var data []byte
			for _, f := range tt.files {
				b, err := os.ReadFile(filepath.Join("testdata", f))
				if err != nil {
					t.Fatal(err)
				}
				data = append(data, b...)
			}
			b, err := bundle.Parse(data)
			if tt.anchors == 0 {
				if !errors.Is(err, bundle.ErrInvalid) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Parse = %v; want ErrInvalid saying %q", err, tt.err)
				}
				return
			}
			if err != nil || len(b.Anchors()) != tt.anchors {
				t.Fatalf("Parse = %v, %v; want %d anchors", b, err, tt.anchors)
			}
		})
	}
}
