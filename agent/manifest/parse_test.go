package manifest

import (
	"encoding/json"
	"strings"
	"testing"
)

// azure wraps $edgeAgent modules (a JSON fragment) in a minimal manifest.
func azure(modules string) string {
	return `{"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1",
"runtime": {"type": "docker"}, "modules": {` + modules + `}}},
"$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}}}}`
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want []string // substrings of the error
	}{
		{"unknown restart policy", "version: '1'\nmodules:\n  cam:\n    image: cam:1\n    restartPolicy: sometimes\n",
			[]string{"line 5", "modules.cam.restartPolicy", `"sometimes" is not a restart policy`, "always, on-failure, on-unhealthy or never"}},
		{"unknown restart policy azure", azure(`"cam": {"type": "docker", "restartPolicy": "sometimes", "settings": {"image": "cam:1"}}`),
			[]string{"line 2", `modulesContent.$edgeAgent."properties.desired".modules.cam.restartPolicy`, "not a restart policy"}},
		{"bad createOptions JSON", azure(`"cam": {"settings": {"image": "cam:1", "createOptions": "{\"HostConfig\": {"}}`),
			[]string{`modules.cam.settings.createOptions`, "invalid createOptions", "unexpected end"}},
		{"createOptions syntax offset", azure(`"cam": {"settings": {"image": "cam:1", "createOptions": "{\"HostConfig\" {}}"}}`),
			[]string{"settings.createOptions", "at character 15 of the createOptions value"}},
		{"createOptions wrong type", azure(`"cam": {"settings": {"image": "cam:1", "createOptions": "{\"HostConfig\": 5}"}}`),
			[]string{"settings.createOptions", "HostConfig: want an object, got the number 5"}},
		{"createOptions not an object", "version: '1'\nmodules:\n  cam:\n    image: cam:1\n    createOptions: '[1]'\n",
			[]string{"modules.cam.createOptions", "must be a JSON object"}},
		{"duplicate module JSON", `{"version": "1", "modules": {"cam": {"image": "a:1"},
  "cam": {"image": "b:1"}}}`,
			[]string{"line 2, column 3 (byte 56)", "modules.cam", `duplicate key "cam" (first at line 1)`}},
		{"duplicate module YAML", "version: '1'\nmodules:\n  cam: {image: a:1}\n  cam: {image: b:1}\n",
			[]string{"line 4", "modules.cam", `duplicate key "cam" (first at line 3)`}},
		{"duplicate module azure", azure(`"cam": {"settings": {"image": "a:1"}}, "cam": {"settings": {"image": "b:1"}}`),
			[]string{`duplicate key "cam"`}},
		{"modules differing in case", "version: '1'\nmodules:\n  cam: {image: a:1}\n  Cam: {image: b:1}\n",
			[]string{"modules.cam", `also defined as "Cam"`}},
		{"agent schema refused by name", strings.Replace(azure(""), `"schemaVersion": "1.1",
"runtime"`, `"schemaVersion": "2.0",
"runtime"`, 1),
			[]string{`$edgeAgent schema version "2.0" is not supported`, "1.0 or 1.1"}},
		{"hub schema refused by name", strings.Replace(azure(""), `{"schemaVersion": "1.1", "routes"`, `{"schemaVersion": "1.4", "routes"`, 1),
			[]string{`$edgeHub schema version "1.4" is not supported`, "1.0, 1.1, 1.2 or 1.3"}},
		{"native schema refused by name", "schemaVersion: '2.0'\nversion: '1'\n",
			[]string{"schemaVersion", `schema version "2.0" is not supported`}},
		{"missing image", "version: '1'\nmodules:\n  cam: {restartPolicy: never}\n",
			[]string{"modules.cam.image", "an image is required"}},
		{"bad image", "version: '1'\nmodules:\n  cam: {image: 'Bad Image'}\n",
			[]string{"modules.cam.image", "not a valid image reference"}},
		{"bad module name", "version: '1'\nmodules:\n  'my cam': {image: a:1}\n",
			[]string{`"my cam" is not a valid module name`}},
		{"unknown key with hint", "version: '1'\nmodules:\n  cam:\n    image: a:1\n    restartPolicty: never\n",
			[]string{"line 5", "modules.cam.restartPolicty", `did you mean "restartPolicy"`}},
		{"unknown top-level key", "version: '1'\nmodule: {}\n", []string{"line 2", `unknown key "module"`, `did you mean`}},
		{"JSON syntax", "{\"version\": \"1\",\n \"modules\": {\"cam\" {}}}", []string{"line 2, column 20 (byte 36)", "modules.cam", "want ':'"}},
		{"JSON unterminated", `{"version": "1", "modules": {`, []string{"byte 29", "unexpected end of input"}},
		{"JSONC unclosed comment", "{\"version\": \"1\" /* oops\n}", []string{"line 1, column 17 (byte 16)", "never closed"}},
		{"JSON trailing data", `{"version": "1"} x`, []string{"byte 17", "after the end of the JSON value"}},
		{"route priority", "version: '1'\nroutes:\n  r1: {route: FROM /messages/* INTO $upstream, priority: 12}\n",
			[]string{"routes.r1.priority", "12 is out of range"}},
		{"route object in hub 1.0", strings.Replace(azure(""), `"schemaVersion": "1.1", "routes": {}`,
			`"schemaVersion": "1.0", "routes": {"r": {"route": "FROM /messages/* INTO $upstream"}}`, 1),
			[]string{"routes.r", "need $edgeHub schemaVersion 1.1"}},
		{"route name", "version: '1'\nroutes:\n  'a.b': FROM /messages/* INTO $upstream\n", []string{`"a.b" is not a valid route name`}},
		{"empty route", "version: '1'\nroutes:\n  r: ''\n", []string{"routes.r.route", "empty"}},
		{"negative startup order", "version: '1'\nmodules:\n  cam: {image: a:1, startupOrder: -1}\n",
			[]string{"modules.cam.startupOrder", "-1 is out of range"}},
		{"layered", `{"modulesContent": {"$edgeAgent": {"properties.desired.modules.m1": {}}}}`,
			[]string{"layered deployment paths", "not supported"}},
		{"env value object", azure(`"cam": {"settings": {"image": "a:1"}, "env": {"A": {"value": {"x": 1}}}}`),
			[]string{"modules.cam.env.A.value", "must be a string, number or boolean"}},
		{"env bare string azure", azure(`"cam": {"settings": {"image": "a:1"}, "env": {"A": "x"}}`),
			[]string{"modules.cam.env.A"}},
		{"env name", "version: '1'\nmodules:\n  cam: {image: a:1, env: {'A=B': x}}\n", []string{"modules.cam.env", "not a valid environment variable name"}},
		{"two YAML documents", "version: '1'\n---\nversion: '2'\n", []string{"more than one YAML document"}},
		{"YAML syntax", "version: [\n", []string{"invalid YAML"}},
		{"missing version", "modules: {}\n", []string{"version", "a version is required"}},
		{"not a mapping", "- a\n- b\n", []string{"a manifest is a mapping"}},
		{"JSON array", "[1]", []string{"a manifest is a mapping"}},
		{"empty", "", []string{"empty manifest"}},
		{"twin not object", "version: '1'\ntwins:\n  cam: 5\n", []string{"twins.cam", "must be an object"}},
		{"twin key", "version: '1'\ntwins:\n  cam: {'a.b': 1}\n", []string{"not a valid twin property name"}},
		{"missing agent", `{"modulesContent": {"$edgeHub": {"properties.desired": {"schemaVersion": "1.1"}}}}`, []string{"$edgeAgent is missing"}},
		{"runtime type", strings.Replace(azure(""), `"type": "docker"}`, `"type": "podman"}`, 1), []string{`runtime type "podman" is not supported`}},
		{"unknown system twin", strings.Replace(azure(""), `"$edgeHub"`, `"$edgeHubX"`, 1), []string{`unknown system twin "$edgeHubX"`}},
		{"credential without address", "version: '1'\nregistryCredentials:\n  r: {username: u, password: p}\n",
			[]string{"registryCredentials.r.address", "required"}},
		{"logging options", strings.Replace(azure(""), `"type": "docker"}`, `"type": "docker", "settings": {"loggingOptions": "nope"}}`, 1),
			[]string{"loggingOptions", "stringified JSON"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatalf("accepted: %+v", m)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
			if len(AsErrors(err)) == 0 {
				t.Errorf("error %T is not a manifest.Errors", err)
			}
		})
	}
}

func TestParseSeveralProblems(t *testing.T) {
	_, err := Parse([]byte("version: '1'\nmodules:\n  a: {image: a:1, restartPolicy: x}\n  b: {image: b:1, status: paused}\n"))
	es := AsErrors(err)
	if len(es) != 2 || es[0].Line != 3 || es[1].Line != 4 {
		t.Fatalf("want two problems on lines 3 and 4, got %v", err)
	}
}

func TestParseAccepts(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		check     func(*Manifest) string
	}{
		{"content wrapper", `{"content": ` + azure(`"cam": {"settings": {"image": "a:1"}}`) + `}`, func(m *Manifest) string {
			if m.Format != FormatAzure || m.Module("cam") == nil {
				return "module cam missing"
			}
			return ""
		}},
		{"case-insensitive azure keys", azure(`"cam": {"RestartPolicy": "never", "Settings": {"Image": "a:1", "CREATEOPTIONS": "{\"Env\":[\"A=1\"]}"}, "ENV": {"X": {"Value": 1}}}`),
			func(m *Manifest) string {
				c := m.Module("cam")
				if c == nil || c.RestartPolicy != RestartNever || c.Image != "a:1" || c.Env["X"] != "1" || string(c.CreateOptions) != `{"Env":["A=1"]}` {
					return "got " + string(mustJSON(c))
				}
				return ""
			}},
		{"schema 1.0.0 and only the agent", `{"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.0.0", "modules": {}}}}}`,
			func(m *Manifest) string { return "" }},
		{"defaults", "version: '1'\nmodules:\n  a: {image: a}\n", func(m *Manifest) string {
			a := m.Module("a")
			if a.Status != StatusRunning || a.RestartPolicy != RestartAlways || a.ImagePullPolicy != PullOnCreate ||
				a.StartupOrder != DefaultStartupOrder || string(a.CreateOptions) != "{}" {
				return "got " + string(mustJSON(a))
			}
			return ""
		}},
		{"numbers and booleans in env", "version: '1'\nmodules:\n  a: {image: a, env: {N: 5, B: true, F: 1.5}}\n", func(m *Manifest) string {
			e := m.Module("a").Env
			if e["N"] != "5" || e["B"] != "true" || e["F"] != "1.5" {
				return "got " + string(mustJSON(e))
			}
			return ""
		}},
		{"BOM and comments before JSON", "\xef\xbb\xbf// hello\n/* x */ {\"version\": \"1\"}", func(m *Manifest) string {
			if m.Version != "1" || m.Format != FormatJSON {
				return "got " + m.String()
			}
			return ""
		}},
		{"stopped module", "version: '1'\nmodules:\n  a: {image: a, status: stopped}\n", func(m *Manifest) string {
			if m.Module("a").Status != StatusStopped {
				return "not stopped"
			}
			return ""
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse([]byte(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			if msg := tc.check(m); msg != "" {
				t.Error(msg)
			}
		})
	}
}

func TestRedacted(t *testing.T) {
	m, err := Parse([]byte("version: '1'\nregistryCredentials:\n  r: {address: x.io, username: u, password: secret}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r := m.Redacted(); r.RegistryCredentials[0].Password != "***" || m.RegistryCredentials[0].Password != "secret" {
		t.Errorf("redacted %+v, original %+v", r.RegistryCredentials, m.RegistryCredentials)
	}
	if m.Credential("https://X.io/") == nil {
		t.Error("credential lookup should normalise scheme, case and slash")
	}
}

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"1", "2", -1}, {"9", "10", -1}, {"10", "9", 1}, {"1.9", "1.10", -1}, {"1.10", "1.10", 0},
		{"07", "7", 0}, {"2024-06-01", "2024-06-12", -1}, {"", "1", -1}, {"1", "", 1}, {"", "", 0},
		{"1.0", "1.0.1", -1}, {"v2", "v10", -1}, {"1a", "1b", -1}, {"2", "1.99", 1},
	} {
		if got := CompareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := CompareVersions(tc.b, tc.a); got != -tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d (antisymmetry)", tc.b, tc.a, got, -tc.want)
		}
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
