package models

import (
	"strings"
	"testing"
)

func TestParseOCIRef(t *testing.T) {
	dg := "sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		in, host, repo, ref string
		bad                 bool
	}{
		{in: "oci://reg.example:5000/models/people@" + dg, host: "reg.example:5000", repo: "models/people", ref: dg},
		{in: "oci://127.0.0.1:5000/people:1.2", host: "127.0.0.1:5000", repo: "people", ref: "1.2"},
		{in: "oci://ghcr.io/acme/detectors/people:latest", host: "ghcr.io", repo: "acme/detectors/people", ref: "latest"},
		{in: "oci://reg/people", bad: true},              // neither tag nor digest
		{in: "oci://reg/people@sha256:1234", bad: true},  // short digest
		{in: "oci:///people:1", bad: true},               // no host
		{in: "https://reg/people:1", bad: true},          // not oci
		{in: "oci://reg/People:1", bad: true},            // repository names are lowercase
		{in: "oci://reg/people:bad tag", bad: true},      // tag grammar
		{in: "oci://reg/people@" + dg + ":x", bad: true}, // digest with junk
	} {
		r, err := ParseOCIRef(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("%s: parsed as %+v", tc.in, r)
			}
			continue
		}
		if err != nil || r.Host != tc.host || r.Repo != tc.repo || r.Reference != tc.ref || r.String() != tc.in {
			t.Errorf("%s: %+v %v", tc.in, r, err)
		}
	}
}

func FuzzParseOCIRef(f *testing.F) {
	f.Add("oci://127.0.0.1:5000/people:1")
	f.Add("oci://reg/a/b@sha256:" + strings.Repeat("0", 64))
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseOCIRef(s)
		if err != nil {
			return
		}
		if _, err := ParseOCIRef(r.String()); err != nil {
			t.Fatalf("%q parsed to %+v, whose String %q does not parse: %v", s, r, r.String(), err)
		}
	})
}

// TestOCIRefInLogs: an oci:// reference by digest reads whole in logs and
// errors (its "@sha256:" is not userinfo: the registry's port and the
// repository were masked as a password); real userinfo is still masked.
func TestOCIRefInLogs(t *testing.T) {
	dg := "sha256:" + strings.Repeat("ab", 32)
	for in, want := range map[string]string{
		"oci://127.0.0.1:5000/models/people@" + dg:         "oci://127.0.0.1:5000/models/people@" + dg,
		"oci://reg.example:5000/people:3":                  "oci://reg.example:5000/people:3",
		"oci://user:secret@reg.example:5000/people@" + dg:  "oci://user:xxxxx@reg.example:5000/people@" + dg,
		"https://user:secret@models.example/people-3.onnx": "https://user:xxxxx@models.example/people-3.onnx",
	} {
		if got := redactString(in); got != want {
			t.Errorf("redactString(%q) = %q, want %q", in, got, want)
		}
	}
}
