package ledge_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The import rules of DESIGN.md and STYLE.md, checked file by file on the
// non-test sources:
//
//   - pipeline, inference, hub, agent, models and web are leaves: they
//     import no other ledge package, except pipeline's detect stage, which
//     imports inference, and shared helpers under internal/;
//   - only cmd/ledge imports appliance; appliance may import every
//     component; internal/ imports only internal/;
//   - each heavy third-party dependency has one home.
const module = "ledge"

var leaves = []string{"pipeline", "inference", "hub", "agent", "models", "web"}

// homes lists, per third-party import prefix, the top-level folders whose
// non-test code may import it.
var homes = map[string][]string{
	"github.com/gin-gonic/gin":            {"web"},
	"github.com/yalue/onnxruntime_go":     {"inference"},
	"github.com/docker/docker":            {"agent"},
	"github.com/mochi-mqtt/server":        {"hub"},
	"github.com/eclipse/paho.mqtt.golang": {"hub", "pipeline"}, // pipeline: the mqtt action to any broker
	"github.com/mattn/go-sqlite3":         {"appliance"},
	"github.com/prometheus/client_golang": {"appliance"},
	"gocv.io/x/gocv":                      {"inference", "pipeline", "cmd"},
	"github.com/warthog618/go-gpiocdev":   {"pipeline"},
	"github.com/gorilla/websocket":        {"hub", "web"}, // web: the dashboard's live feed
	"github.com/chromedp":                 {},             // tests only
}

func TestImportRules(t *testing.T) {
	fset := token.NewFileSet()
	checked := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != "." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		top := strings.Split(filepath.ToSlash(path), "/")[0]
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if msg := violation(filepath.ToSlash(path), top, p); msg != "" {
				t.Errorf("%s imports %s: %s", path, p, msg)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 10 {
		t.Fatalf("only %d files checked: is the test running at the module root?", checked)
	}
}

func violation(file, top, imp string) string {
	if imp == module || strings.HasPrefix(imp, module+"/") {
		target := strings.Split(strings.TrimPrefix(imp, module+"/"), "/")[0]
		switch {
		case target == top:
			return ""
		case target == "internal":
			if strings.HasPrefix(imp, module+"/internal/testenv") {
				return "testenv is for tests only"
			}
			return ""
		case target == "appliance" && top != "cmd":
			return "only cmd/ledge imports appliance"
		case top == "internal":
			return "internal/ helpers import no component"
		case top == "appliance" || top == "cmd":
			return ""
		case top == "pipeline" && target == "inference":
			if !strings.Contains(file, "detect") {
				return "pipeline reaches inference only from its detect stage (a file or package named detect*)"
			}
			return ""
		case contains(leaves, top):
			return top + " is a leaf: declare an interface and let appliance wire the implementation"
		}
		return ""
	}
	if strings.HasPrefix(file, "internal/testenv/") {
		return "" // test-only helpers (imported by _test.go files alone, checked above)
	}
	if top == "deploy" {
		return "" // example programs a user builds into container images, not part of ledge
	}
	for prefix, allowed := range homes {
		if imp == prefix || strings.HasPrefix(imp, prefix+"/") {
			if !contains(allowed, top) {
				return "this dependency lives in " + strings.Join(allowed, ", ") + " only (STYLE.md: one home per dependency)"
			}
		}
	}
	return ""
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestViolationRules checks the checker on examples, so a rule that cannot
// fail is noticed.
func TestViolationRules(t *testing.T) {
	for _, tc := range []struct {
		file, imp string
		bad       bool
	}{
		{"hub/broker.go", "ledge/pipeline", true},
		{"hub/broker.go", "ledge/internal/migrate", false},
		{"hub/broker.go", "ledge/internal/testenv", true},
		{"web/server.go", "ledge/appliance", true},
		{"cmd/ledge/main.go", "ledge/appliance", false},
		{"appliance/app.go", "ledge/hub", false},
		{"pipeline/engine.go", "ledge/inference", true},
		{"pipeline/detect.go", "ledge/inference", false},
		{"internal/migrate/m.go", "ledge/hub", true},
		{"hub/x.go", "github.com/gin-gonic/gin", true},
		{"web/x.go", "github.com/gin-gonic/gin", false},
		{"agent/x.go", "github.com/mattn/go-sqlite3", true},
		{"pipeline/x.go", "gocv.io/x/gocv", false},
		{"hub/x.go", "gocv.io/x/gocv", true},
	} {
		top := strings.Split(tc.file, "/")[0]
		if got := violation(tc.file, top, tc.imp) != ""; got != tc.bad {
			t.Errorf("%s importing %s: violation %v, want %v", tc.file, tc.imp, got, tc.bad)
		}
	}
}
