package web

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"ledge/internal/testenv"
)

func TestBrowserLogin(t *testing.T) {
	s := startAuthServer(t, "correct horse battery")
	ctx := testenv.Browser(t)

	// A wrong password is refused and says so.
	err := chromedp.Do(ctx,
		chromedp.Navigate(s.url+"/"),
		chromedp.WaitVisible(chromedp.ID("password")),
		chromedp.SendKeys(chromedp.ID("password"), "not the password"),
		chromedp.Submit(chromedp.ID("password")),
		chromedp.WaitVisible(chromedp.CSS(".error")),
	)
	if err != nil {
		t.Fatal(err)
	}
	errText, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(".error")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errText, "wrong password") {
		t.Fatalf("error text %q", errText)
	}
	testenv.Screenshot(t, ctx, "login-refused")

	// The right one leads to the overview, which fills in from the API.
	err = chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("password"), "correct horse battery"),
		chromedp.Submit(chromedp.ID("password")),
		chromedp.WaitVisible(chromedp.ID("health-list")),
	)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector("#uptime").textContent !== "…"`, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("overview never filled in: %v", err)
	}
	health, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("health")))
	if err != nil {
		t.Fatal(err)
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil {
		t.Fatal(err)
	}
	if health != "ok" || !strings.Contains(title, "Overview") {
		t.Errorf("overview: health %q, title %q", health, title)
	}
	testenv.Screenshot(t, ctx, "overview")
}
