package manifest

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json")

// TestGoldenSample: the Azure sample of the reference (§1.5, with chunked
// createOptions and a $ledge twin), its native YAML twin and its native
// JSON-with-comments twin map to the same internal model, which is kept in
// testdata/sample.golden.json.
func TestGoldenSample(t *testing.T) {
	golden := filepath.Join("testdata", "sample.golden.json")
	var first []byte
	for _, tc := range []struct {
		file   string
		format Format
	}{
		{"azure-sample.json", FormatAzure},
		{"native-sample.yaml", FormatYAML},
		{"native-sample.jsonc", FormatJSON},
	} {
		data, err := os.ReadFile(filepath.Join("testdata", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		m, err := Parse(data)
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if m.Format != tc.format {
			t.Errorf("%s: format %s, want %s", tc.file, m.Format, tc.format)
		}
		got, err := json.MarshalIndent(m, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, '\n')
		if first == nil {
			first = got
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from %s:\n%s", tc.file, golden, got)
			}
			continue
		}
		if !bytes.Equal(got, first) {
			t.Errorf("%s maps to a different model than azure-sample.json:\n%s\nwant\n%s", tc.file, got, first)
		}
	}
}

// TestSampleContent spells out what the golden file must hold, so a wrong
// golden file cannot pass unnoticed.
func TestSampleContent(t *testing.T) {
	data, _ := os.ReadFile(filepath.Join("testdata", "azure-sample.json"))
	m, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != "3" || len(m.Modules) != 2 {
		t.Fatalf("version %q, %d modules", m.Version, len(m.Modules))
	}
	cam, det := m.Module("camera"), m.Module("detector")
	if cam == nil || det == nil {
		t.Fatal("camera or detector missing")
	}
	wantCO := `{"HostConfig":{"Devices":[{"CgroupPermissions":"rwm","PathInContainer":"/dev/video0","PathOnHost":"/dev/video0"}]}}`
	if string(cam.CreateOptions) != wantCO {
		t.Errorf("camera createOptions (3 chunks) = %s, want %s", cam.CreateOptions, wantCO)
	}
	if cam.StartupOrder != 1 || cam.RestartPolicy != RestartAlways || cam.Env["FPS"] != "5" || cam.Status != StatusRunning {
		t.Errorf("camera = %+v", cam)
	}
	if det.StartupOrder != DefaultStartupOrder || det.RestartPolicy != RestartOnFailure || string(det.CreateOptions) != "{}" {
		t.Errorf("detector = %+v", det)
	}
	if c := m.Credential("registry.example.com"); c == nil || c.Username != "u" || c.Password != "p" {
		t.Errorf("credential = %+v", c)
	}
	var routes map[string]Route
	if err := json.Unmarshal(m.Sections[SectionRoutes], &routes); err != nil {
		t.Fatal(err)
	}
	if len(routes) != 3 || routes["alerts"].Priority == nil || *routes["alerts"].Priority != 0 ||
		routes["alerts"].TimeToLiveSecs != 86400 || routes["frames"].Priority != nil {
		t.Errorf("routes = %+v", routes)
	}
	if got := string(m.Sections[SectionStoreAndForward]); got != `{"timeToLiveSecs":7200}` {
		t.Errorf("storeAndForward = %s", got)
	}
	if got := string(m.Twins["detector"]); got != `{"classes":"person,forklift","threshold":0.6}` {
		t.Errorf("detector twin = %s", got)
	}
	if m.Sections[SectionModels] == nil || m.Sections[SectionPipelines] == nil {
		t.Errorf("models or pipelines section missing: %v", m.Sections)
	}
	if !strings.Contains(strings.Join(m.Notes, "\n"), "systemModules") {
		t.Error("want a note that systemModules are not run")
	}
}

// TestExamples: the example manifests under deploy/examples parse.
func TestExamples(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "deploy", "examples", "deployment*"))
	if len(files) < 2 {
		t.Fatalf("found %v", files)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m, err := Parse(data)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		switch filepath.Base(f) {
		case "deployment.yaml", "deployment-azure.json": // the same deployment in both formats
			if m.Version != "2024.06.1" || m.Module("camera") == nil || m.Sections[SectionRoutes] == nil {
				t.Errorf("%s: %s", f, m)
			}
		case "deployment-local.yaml":
			if m.Module("sender") == nil || m.Module("receiver") == nil || m.Sections[SectionRoutes] == nil {
				t.Errorf("%s: %s", f, m)
			}
		}
	}
}
