package hub

import (
	"strings"
	"testing"
)

func TestMethodTarget(t *testing.T) {
	for path, want := range map[string]string{
		"/twins/thermo/methods":                     "thermo",
		"/twins/edge/modules/cam/methods":           "edge/cam",
		"/twins/edge/modules/%24edgeAgent/methods/": "edge/$edgeAgent",
		"/twins/a%2Fb/methods":                      "",
		"/twins//methods":                           "",
		"/twins/edge/modules//methods":              "",
		"/twins/edge/things/cam/methods":            "",
		"/twins/edge/methods/x":                     "",
		"/twins/edge":                               "",
		"/other/edge/methods":                       "",
	} {
		got, ok := methodTarget(path)
		if got != want || ok != (want != "") {
			t.Errorf("%s: %q %v, want %q", path, got, ok, want)
		}
	}
}

// FuzzMethodTarget: any request path gives a target of one or two
// non-empty ids, or none; never a panic.
func FuzzMethodTarget(f *testing.F) {
	for _, s := range []string{"/twins/d/methods", "/twins/d/modules/m/methods", "/twins/%zz/methods", "/twins/d/modules/%2F/methods"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		got, ok := methodTarget(path)
		if !ok {
			return
		}
		parts := strings.Split(got, "/")
		if len(parts) > 2 || parts[0] == "" || parts[len(parts)-1] == "" {
			t.Fatalf("%q gave target %q", path, got)
		}
	})
}
