package dashboard_test

import (
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/ca/fleet"
	"github.com/meshid/meshid/cmd/meshid/dashboardtest"
	"github.com/meshid/meshid/cmd/meshid/internal/check/checktest"
)

var screenshots = flag.String("screenshots", "", "write the pages' screenshots into this directory (test/e2e's TestDashboard writes those of docs/images, from a real cluster)")

// TestPagesInChromium: each page renders in headless Chromium with no
// console error and no exception (the Content-Security-Policy lets the
// embedded script and stylesheet load), the timeline is drawn, and the
// live update swaps the page's parts in without a reload (every 200 ms
// here: Options.Refresh).
func TestPagesInChromium(t *testing.T) {
	b := dashboardtest.Start(t, 60*time.Second)
	w := checktest.New(t, now)
	lag := w.Reported(t, spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/cart"), "ffff000000000003")
	lag.BundleSHA256 = strings.Repeat("ab", 32)
	w.Fleet = []fleet.Proxy{w.Reported(t, spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/web"), "aaaa000000000001"), lag}
	base := serve(t, w)

	for _, page := range []struct{ path, want, live string }{
		{"/trust", "#timeline .mark", "#checks"},
		{"/fleet", "#fleet tr.status-warn", "#fleet"},
		{"/policy?namespace=meshid", "#matrix", "#matrix"},
	} {
		if err := b.Open(base+page.path, page.want); err != nil {
			t.Fatalf("%s: %v", page.path, err)
		}
		if err := b.Styled(); err != nil {
			t.Errorf("%s: %v", page.path, err)
		}
		// Live update: a part is replaced in place, the page not reloaded
		// (the window keeps its mark).
		if _, err := dashboardtest.Eval[any](b, `window.meshidMark = 1; document.querySelector("`+page.live+`").dataset.old = "1"`); err != nil {
			t.Fatal(err)
		}
		if err := chromedp.Do(b.Ctx, chromedp.WaitReady(chromedp.CSS(page.live+`:not([data-old])`))); err != nil {
			t.Fatalf("%s: the live update did not replace %s: %v", page.path, page.live, err)
		}
		if mark, err := dashboardtest.Eval[int](b, `window.meshidMark || 0`); err != nil || mark != 1 {
			t.Errorf("%s: the page was reloaded instead of updated (%d, %v)", page.path, mark, err)
		}
		b.Screenshot(t, *screenshots, "dashboard-"+strings.TrimPrefix(strings.Split(page.path, "?")[0], "/")+".png")
	}
	if problems := b.Finish(t); len(problems) > 0 {
		t.Errorf("console errors or exceptions: %v", problems)
	}
}
