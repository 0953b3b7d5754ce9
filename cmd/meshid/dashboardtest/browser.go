// Package dashboardtest drives `meshid dashboard`'s pages in headless
// Chromium (Debian's chromium, through chromedp): it starts the browser,
// collects every console error, warning and exception, and saves
// screenshots. The dashboard's own tests and the e2e test against a real
// control plane (test/e2e) share it, which is why it is not under
// cmd/meshid/internal. It is test material: only tests import it, and it
// imports nothing of meshid's.
package dashboardtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Browser is one headless Chromium and its console, for one test.
type Browser struct {
	// Ctx runs chromedp actions in the browser's tab.
	Ctx context.Context

	mu       sync.Mutex
	problems []string
	end      chan struct{}
}

// endMarker is the console message Finish waits for: every message before
// it has been read.
const endMarker = "meshid-test-end"

// Start starts headless Chromium for t, stopped when t ends or after
// timeout. Without chromium, t is skipped under -short and fails
// otherwise, saying what to install.
func Start(t testing.TB, timeout time.Duration) *Browser {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		if testing.Short() {
			t.Skip("chromium not found: install Debian package chromium (.ci/run does) to test the pages in a browser")
		}
		t.Fatal("chromium not found: install Debian package chromium (.ci/run does)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:0:0],
		chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("metrics-recording-only", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1200, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() { cancelTimeout(); cancelTab(); cancelAlloc() })
	b := &Browser{Ctx: ctx, end: make(chan struct{})}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Text == endMarker {
				close(b.end)
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning || m.Type == chromedp.ConsoleException {
				b.mu.Lock()
				b.problems = append(b.problems, fmt.Sprintf("%s %s: %s", m.Type, m.URL, m.Text))
				b.mu.Unlock()
			}
		}
	}()
	return b
}

// Open navigates to url and waits until selector is visible.
func (b *Browser) Open(url, selector string) error {
	return chromedp.Do(b.Ctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(selector)))
}

// Eval evaluates the script in the page.
func Eval[T any](b *Browser, script string) (T, error) {
	return chromedp.Run(b.Ctx, chromedp.Evaluate[T](script))
}

// Styled reports whether the dashboard's stylesheet applied to the page
// (its navigation bar's colour).
func (b *Browser) Styled() error {
	bg, err := Eval[string](b, `getComputedStyle(document.querySelector("nav")).backgroundColor`)
	if err != nil || bg != "rgb(34, 34, 51)" {
		return fmt.Errorf("the stylesheet did not apply (nav background %q, %v)", bg, err)
	}
	return nil
}

// Screenshot takes the whole page and, when dir is set, writes it there
// as name.
func (b *Browser) Screenshot(t testing.TB, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(b.Ctx, chromedp.FullScreenshot(100))
	if err != nil || len(png) == 0 {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if dir != "" {
		if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Finish returns every console error, warning and exception of the test,
// once the console has delivered all its messages. Call it last.
func (b *Browser) Finish(t testing.TB) []string {
	t.Helper()
	if _, err := Eval[any](b, `console.info("`+endMarker+`")`); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.end:
	case <-b.Ctx.Done():
		t.Fatal("the browser's console messages did not arrive")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.problems
}
