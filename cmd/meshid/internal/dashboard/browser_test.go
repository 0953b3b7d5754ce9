package dashboard_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/cmd/meshid/internal/check/checktest"
)

var screenshots = flag.String("screenshots", "", "write the pages' screenshots into this directory (docs/images)")

// TestPagesInChromium: each page renders in headless Chromium with no
// console error and no exception (the Content-Security-Policy lets the
// embedded script and stylesheet load), the timeline is drawn, and the
// live update swaps the page's parts in without a reload (every 200 ms
// here: Options.Refresh).
func TestPagesInChromium(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		if testing.Short() {
			t.Skip("chromium not found: install Debian package chromium (.ci/run does) to test the pages in a browser")
		}
		t.Fatal("chromium not found: install Debian package chromium (.ci/run does)")
	}
	w := checktest.New(t, now)
	lag := w.Reported(t, spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/cart"), "ffff000000000003")
	lag.BundleSHA256 = strings.Repeat("ab", 32)
	w.Fleet = []fleet.Proxy{w.Reported(t, spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/web"), "aaaa000000000001"), lag}
	base := serve(t, w)

	opts := append(chromedp.DefaultExecAllocatorOptions[:0:0],
		chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("metrics-recording-only", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1200, 900))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	// Every console message and exception, read until the test's own last one.
	var mu sync.Mutex
	var problems []string
	end := make(chan struct{})
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Text == "meshid-test-end" {
				close(end)
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning || m.Type == chromedp.ConsoleException {
				mu.Lock()
				problems = append(problems, fmt.Sprintf("%s %s: %s", m.Type, m.URL, m.Text))
				mu.Unlock()
			}
		}
	}()
	for _, page := range []struct{ path, want string }{
		{"/trust", "#timeline .mark"},
		{"/fleet", "#fleet tr.status-warn"},
	} {
		if err := chromedp.Do(ctx, chromedp.Navigate(base+page.path), chromedp.WaitVisible(chromedp.CSS(page.want))); err != nil {
			t.Fatalf("%s: %v", page.path, err)
		}
		styled, err := chromedp.Run(ctx, chromedp.Evaluate[string](`getComputedStyle(document.querySelector("nav")).backgroundColor`))
		if err != nil || styled != "rgb(34, 34, 51)" {
			t.Errorf("%s: the stylesheet did not apply (nav background %q, %v)", page.path, styled, err)
		}
		// Live update: the checks part is replaced in place, the page not
		// reloaded (the window keeps its mark).
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](`window.meshidMark = 1; document.querySelector("main table").dataset.old = "1"`)); err != nil {
			t.Fatal(err)
		}
		if err := chromedp.Do(ctx, chromedp.WaitReady(chromedp.CSS(`main table:not([data-old])`))); err != nil {
			t.Fatalf("%s: the live update did not replace the table: %v", page.path, err)
		}
		if mark, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.meshidMark || 0`)); err != nil || mark != 1 {
			t.Errorf("%s: the page was reloaded instead of updated (%d, %v)", page.path, mark, err)
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil || len(png) == 0 {
			t.Fatalf("%s: screenshot: %v", page.path, err)
		}
		if *screenshots != "" {
			if err := os.WriteFile(filepath.Join(*screenshots, "dashboard-"+strings.TrimPrefix(page.path, "/")+".png"), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](`console.info("meshid-test-end")`)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-end:
	case <-ctx.Done():
		t.Fatal("the browser's console messages did not arrive")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Errorf("console errors or exceptions: %v", problems)
	}
}
