package ledge_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The import rules of DESIGN.md and STYLE.md, checked package by package
// on the non-test sources (every file, whatever its build tags):
//
//   - pipeline, inference, hub, agent, models and web are leaves: they
//     import no other ledge package, except shared helpers under internal/
//     and the detect stage's package, ledge/pipeline/detect, which alone in
//     pipeline imports inference;
//   - only cmd/ledge imports appliance; appliance may import every
//     component; internal/ imports only internal/;
//   - each heavy third-party dependency has one home.
const module = "ledge"

// inferenceGate is the one package of pipeline that imports inference.
const inferenceGate = "pipeline/detect"

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
	"github.com/eclipse/paho.golang":      {},             // tests only: an MQTT 5 client we did not write
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
		pkg := filepath.ToSlash(filepath.Dir(path))
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if msg := violation(pkg, p); msg != "" {
				t.Errorf("%s (package %s/%s) imports %s: %s", path, module, pkg, p, msg)
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

// The rules, by the message a violation of each gets.
const (
	ruleTestenv   = "testenv is for tests only"
	ruleAppliance = "only cmd/ledge imports appliance"
	ruleInternal  = "internal/ helpers import no component"
	ruleInference = "in pipeline, only " + module + "/" + inferenceGate + " (the detect stage) imports inference"
	ruleLeaf      = "is a leaf: declare an interface and let appliance wire the implementation"
	ruleOneHome   = "(STYLE.md: one home per dependency)"
)

// violation says which rule package pkg (its folder, relative to the
// module root) breaks by importing imp, or "".
func violation(pkg, imp string) string {
	top := strings.Split(pkg, "/")[0]
	if imp == module || strings.HasPrefix(imp, module+"/") {
		target := strings.TrimPrefix(imp, module+"/")
		targetTop := strings.Split(target, "/")[0]
		switch {
		case targetTop == top:
			return ""
		case targetTop == "internal":
			if target == "internal/testenv" || strings.HasPrefix(target, "internal/testenv/") {
				return ruleTestenv
			}
			return ""
		case targetTop == "appliance" && top != "cmd":
			return ruleAppliance
		case top == "internal":
			return ruleInternal
		case top == "appliance" || top == "cmd":
			return ""
		case top == "pipeline" && targetTop == "inference":
			if pkg != inferenceGate {
				return ruleInference
			}
			return ""
		case slices.Contains(leaves, top):
			return top + " " + ruleLeaf
		}
		return ""
	}
	if pkg == "internal/testenv" || strings.HasPrefix(pkg, "internal/testenv/") {
		return "" // test-only helpers (imported by _test.go files alone, checked above)
	}
	if top == "deploy" {
		return "" // example programs a user builds into container images, not part of ledge
	}
	for prefix, allowed := range homes {
		if imp == prefix || strings.HasPrefix(imp, prefix+"/") {
			if !slices.Contains(allowed, top) {
				return "this dependency lives in " + strings.Join(allowed, ", ") + " only " + ruleOneHome
			}
		}
	}
	return ""
}

// TestViolationRules checks the checker on examples: each rule is broken
// by at least one of them, so a rule that cannot fail is noticed.
func TestViolationRules(t *testing.T) {
	broken := map[string]bool{}
	for _, tc := range []struct {
		pkg, imp string
		rule     string // "" when allowed
	}{
		{"hub", "ledge/pipeline", ruleLeaf},
		{"hub", "ledge/internal/migrate", ""},
		{"hub", "ledge/internal/testenv", ruleTestenv},
		{"web", "ledge/appliance", ruleAppliance},
		{"cmd/ledge", "ledge/appliance", ""},
		{"appliance", "ledge/hub", ""},
		{"appliance", "ledge/pipeline/detect", ""},
		{"pipeline", "ledge/inference", ruleInference},
		{"pipeline/source", "ledge/inference", ruleInference},
		{"pipeline/detector", "ledge/inference", ruleInference},
		{"pipeline/detect/sub", "ledge/inference", ruleInference},
		{"pipeline/detect", "ledge/inference", ""},
		{"pipeline", "ledge/pipeline/detect", ""},
		{"pipeline/detect", "ledge/models", ruleLeaf},
		{"models", "ledge/pipeline/detect", ruleLeaf},
		{"internal/migrate", "ledge/hub", ruleInternal},
		{"hub", "github.com/gin-gonic/gin", ruleOneHome},
		{"web", "github.com/gin-gonic/gin", ""},
		{"agent", "github.com/mattn/go-sqlite3", ruleOneHome},
		{"pipeline", "gocv.io/x/gocv", ""},
		{"pipeline/detect", "gocv.io/x/gocv", ""},
		{"hub", "gocv.io/x/gocv", ruleOneHome},
		{"deploy/examples/module", "github.com/gin-gonic/gin", ""},
	} {
		got := violation(tc.pkg, tc.imp)
		if (got == "") != (tc.rule == "") || !strings.Contains(got, tc.rule) {
			t.Errorf("package %s importing %s: violation %q, want %q", tc.pkg, tc.imp, got, tc.rule)
		}
		if got != "" {
			broken[tc.rule] = true
		}
	}
	for _, rule := range []string{ruleTestenv, ruleAppliance, ruleInternal, ruleInference, ruleLeaf, ruleOneHome} {
		if !broken[rule] {
			t.Errorf("no example breaks the rule %q", rule)
		}
	}
}
