package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestCLIPrintsWhatItMeans: `ledge hub` and `ledge status` print the
// hub's bound addresses as a user reaches them (127.0.0.1:port, not
// :port); `deploy check` shows a route's text in the plan; `deploy apply
// --wait` of a deployment without modules prints no dangling "| ".
func TestCLIPrintsWhatItMeans(t *testing.T) {
	dataDir := t.TempDir()
	startLedge(t, "--data-dir", dataDir)
	base := []string{"--data-dir", dataDir}

	out, errOut, code := ledge(t, append([]string{"hub"}, base...)...)
	if code != 0 || !regexp.MustCompile(`mqtt 127\.0\.0\.1:\d+, mqtts 127\.0\.0\.1:\d+`).MatchString(out) {
		t.Errorf("ledge hub: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, _ = ledge(t, append([]string{"status"}, base...)...)
	if !regexp.MustCompile(`(?m)^hub .*mqtt 127\.0\.0\.1:\d+, mqtts 127\.0\.0\.1:\d+`).MatchString(out) {
		t.Errorf("ledge status:\n%s%s", out, errOut)
	}

	m := filepath.Join(t.TempDir(), "routes.yaml")
	os.WriteFile(m, []byte("version: \"1\"\nroutes:\n  up: FROM /messages/* WHERE $body.temp > 30 INTO $upstream\n"), 0o644)
	out, errOut, code = ledge(t, append([]string{"deploy", "check", m}, base...)...)
	if code != 0 || !regexp.MustCompile(`(?m)^  create +route +up +FROM /messages/\* WHERE \$body\.temp > 30 INTO \$upstream$`).MatchString(out) {
		t.Errorf("deploy check: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = ledge(t, append([]string{"deploy", "apply", "--wait", m}, base...)...)
	if code != 0 || strings.Contains(out, "| \n") || !strings.Contains(out, "converged") {
		t.Errorf("deploy apply --wait: exit %d\n%q%s", code, out, errOut)
	}
}
