package web

import (
	"context"
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

// When ledge stops answering, an open page says so above what it shows
// (which is from before) instead of going on looking alive, and says it
// again no more once ledge is back.
func TestBrowserSaysWhenLedgeIsGone(t *testing.T) {
	db := testenv.DB(t)
	if err := SetAdminPassword(t.Context(), db, "correct horse battery"); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Listen: "127.0.0.1:0", DB: db, DeviceID: "gw-test", Version: "t"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	url := "http://" + s.Addr().String()

	b := testenv.Browser(t)
	err = chromedp.Do(b,
		chromedp.Navigate(url+"/"),
		chromedp.WaitVisible(chromedp.ID("password")),
		chromedp.SendKeys(chromedp.ID("password"), "correct horse battery"),
		chromedp.Submit(chromedp.ID("password")),
		chromedp.WaitVisible(chromedp.ID("health-list")),
	)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(b, chromedp.Poll[bool](`document.querySelector("#uptime").textContent !== "…"`, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("overview never filled in: %v", err)
	}
	if hidden, _ := chromedp.Run(b, chromedp.Evaluate[bool](`!document.querySelector("#offline") || document.querySelector("#offline").hidden`)); !hidden {
		t.Fatal("the offline notice shows while ledge answers")
	}

	cancel() // ledge goes away
	<-done
	done <- nil
	if _, err := chromedp.Run(b, chromedp.Poll[bool](`(() => { const o = document.querySelector("#offline"); return !!o && !o.hidden; })()`, chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		t.Fatalf("no notice that ledge does not answer: %v", err)
	}
	text, err := chromedp.Run(b, chromedp.Text(chromedp.ID("offline")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "does not answer") {
		t.Errorf("offline notice %q", text)
	}
	if stale, _ := chromedp.Run(b, chromedp.Evaluate[bool](`document.querySelector("main").classList.contains("stale")`)); !stale {
		t.Error("the page's content is not marked stale")
	}
	testenv.Screenshot(t, b, "overview-offline")

	// Back on the same address: the notice goes by itself.
	s2, err := New(Options{Listen: s.Addr().String(), DB: db, DeviceID: "gw-test", Version: "t"})
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- s2.Run(ctx2) }()
	t.Cleanup(func() { cancel2(); <-done2 })
	if _, err := chromedp.Run(b, chromedp.Poll[bool](`document.querySelector("#offline").hidden && !document.querySelector("main").classList.contains("stale")`, chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		href, _ := chromedp.Run(b, chromedp.Evaluate[string](`location.href + " " + document.querySelector("#offline").hidden + " " + document.querySelector("main").className + " " + document.querySelector("#conn").textContent`))
		t.Fatalf("the notice stays once ledge is back: %v (%s)", err, href)
	}
}
