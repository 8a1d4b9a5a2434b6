package appliance

import (
	"strings"
	"testing"
	"time"

	"ledge/internal/testenv"
)

// TestDashboardHubChartWindow: the Hub page's "Messages per second (last
// 10 minutes)" chart spans ten minutes ending now. Its page collects the
// rates while it is open: a few seconds of them are drawn at the right
// edge, not stretched over the whole width as if they were ten minutes.
func TestDashboardHubChartWindow(t *testing.T) {
	d := startDashboard(t, nil)
	ctx := testenv.Browser(t)
	console := watchConsole(t, ctx)
	login(t, ctx, d.base, testPassword)
	waitOverview(t, ctx)
	navigate(t, ctx, d.base+"/hub")
	if title := evalString(t, ctx, `document.querySelector("#rate-title").textContent`); !strings.Contains(title, "last 10 minutes") {
		t.Fatalf("the chart's title is %q", title)
	}
	wait(t, ctx, "the hub page filled in", `document.querySelector("#clients").textContent !== "–"`, 15*time.Second)
	time.Sleep(5 * time.Second) // three polls: three points per series
	testenv.Screenshot(t, ctx, "hub-chart")
	// Coloured pixels (the series; the grid and labels are grey) in the
	// left half of the plot, above the legend.
	left := evalString(t, ctx, `(() => {
		const c = document.querySelector("#rate-chart"), dpr = window.devicePixelRatio || 1;
		const w = c.width, h = c.height, pad = 28 * dpr;
		const d = c.getContext("2d").getImageData(0, 0, w, h).data;
		let n = 0;
		for (let y = 0; y < h - 12 * dpr; y++) for (let x = Math.round(pad + 4 * dpr); x < Math.round(pad + (w - pad) / 2); x++) {
			const i = 4 * (y * w + x);
			if (d[i + 3] > 0 && Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 60) n++;
		}
		return String(n);
	})()`)
	if left != "0" {
		t.Errorf("seconds of rates cover the left half of a ten-minute chart (%s coloured pixels there)", left)
	}
	for _, m := range console.take() {
		t.Errorf("console: %s", m)
	}
}
