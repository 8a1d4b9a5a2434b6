package manifest

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/distribution/reference"
)

// co wraps createOptions text (a Go string, escaped here for JSON) in a
// one-module Azure manifest.
func co(text string) string {
	esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(text)
	return azure(`"cam": {"type": "docker", "settings": {"image": "cam:1", "createOptions": "` + esc + `"}}`)
}

// TestEdgeAgentAccepts: manifests edgeAgent runs (it reads them with
// Json.NET's default settings) are accepted, read as edgeAgent reads
// them, with a warning for what is ignored. One case per bullet of the
// issue, hand-made.
func TestEdgeAgentAccepts(t *testing.T) {
	for _, tc := range []struct {
		name     string
		doc      string
		wantCO   string   // the module's canonical createOptions, when set
		image    string   // the module's image, when set
		env      string   // "K=V" of the module's env, when set
		warnings []string // substrings, each in one warning
		not      []string // substrings in no warning
	}{
		// Json.NET converts strings, numbers and booleans for edgeAgent's
		// own fields.
		{name: "Privileged as a string", doc: co(`{"HostConfig":{"Privileged":"true"}}`), wantCO: `{"HostConfig":{"Privileged":true}}`},
		{name: "Privileged as a number", doc: co(`{"HostConfig":{"Privileged":1}}`), wantCO: `{"HostConfig":{"Privileged":true}}`},
		{name: "Privileged as False", doc: co(`{"HostConfig":{"Privileged":" False "}}`), wantCO: `{"HostConfig":{"Privileged":false}}`},
		{name: "Memory as a string", doc: co(`{"HostConfig":{"Memory":"71000000"}}`), wantCO: `{"HostConfig":{"Memory":71000000}}`},
		{name: "Memory with a sign and space", doc: co(`{"HostConfig":{"Memory":" +42 "}}`), wantCO: `{"HostConfig":{"Memory":42}}`},
		{name: "Memory as a fraction", doc: co(`{"HostConfig":{"Memory":2.5}}`), wantCO: `{"HostConfig":{"Memory":2}}`,
			warnings: []string{"HostConfig.Memory: 2.5 is rounded to 2, as edgeAgent does"}},
		{name: "log option as a boolean", doc: co(`{"HostConfig":{"LogConfig":{"Type":"json-file","Config":{"compress":true,"max-file":3}}}}`),
			wantCO: `{"HostConfig":{"LogConfig":{"Config":{"compress":"True","max-file":"3"},"Type":"json-file"}}}`},
		{name: "env item as a number", doc: co(`{"Env":["A=1",5]}`), wantCO: `{"Env":["A=1","5"]}`},
		{name: "label as a float", doc: co(`{"Labels":{"rate":1.50,"big":1e20}}`), wantCO: `{"Labels":{"big":"1E+20","rate":"1.5"}}`},
		{name: "port as a number", doc: co(`{"HostConfig":{"PortBindings":{"80/tcp":[{"HostPort":8080}]}}}`),
			wantCO: `{"HostConfig":{"PortBindings":{"80/tcp":[{"HostPort":"8080"}]}}}`},
		{name: "field names in any case", doc: co(`{"hostconfig":{"privileged":"TRUE","binds":["/srv/a:/a"]}}`),
			wantCO: `{"HostConfig":{"Binds":["/srv/a:/a"],"Privileged":true}}`},
		// Json.NET's reader: trailing commas, comments, single quotes,
		// unquoted names.
		{name: "trailing comma", doc: co(`{"Env":["A=1",],"HostConfig":{"Privileged":false,},}`), wantCO: `{"Env":["A=1"],"HostConfig":{"Privileged":false}}`},
		{name: "comments, single quotes, bare names", doc: co("{/* c */ Env: ['A=1'], // x\n 'Labels': {'k': 'v'}}"), wantCO: `{"Env":["A=1"],"Labels":{"k":"v"}}`},
		{name: "null and empty createOptions", doc: co(` null `), wantCO: `{}`},
		// Fields edgeAgent passes on as written: Docker's reading.
		{name: "Cmd as one string", doc: co(`{"Cmd":"serve --port 80"}`), wantCO: `{"Cmd":"serve --port 80"}`},
		{name: "a GPU request", doc: co(`{"HostConfig":{"DeviceRequests":[{"Count":-1,"Capabilities":[["gpu"]]}]}}`),
			wantCO: `{"HostConfig":{"DeviceRequests":[{"Capabilities":[["gpu"]],"Count":-1}]}}`},
		// Keys edgeAgent ignores: warnings with their path.
		{name: "unknown createOptions field", doc: co(`{"HostConfg":{"Privileged":true},"Env":["A=1"]}`), wantCO: `{"Env":["A=1"]}`,
			warnings: []string{`settings.createOptions: HostConfg: not a field of Docker's ContainerCreate body: ignored`, `did you mean "HostConfig"?`}},
		{name: "unknown nested createOptions field", doc: co(`{"HostConfig":{"Privilegd":true}}`), wantCO: `{"HostConfig":{}}`,
			warnings: []string{`HostConfig.Privilegd`, `did you mean "Privileged"?`, "character 16 of the createOptions value"}},
		// https://github.com/Azure-Samples/onnxruntime-iot-edge/blob/master/deployment.template.json
		// puts Env in HostConfig: the hint names where it belongs, not a
		// look-alike ("Dns").
		{name: "a field at the wrong level", doc: co(`{"HostConfig":{"Env":["A=1"],"Binds":[]},"Privileged":true}`), wantCO: `{"HostConfig":{"Binds":[]}}`,
			warnings: []string{`HostConfig.Env: not a field of Docker's ContainerCreate body: ignored (edgeAgent passes it on and the Docker engine ignores it); Env belongs at the top level of createOptions, not in HostConfig`,
				`Privileged: not a field of Docker's ContainerCreate body: ignored (edgeAgent passes it on and the Docker engine ignores it); Privileged belongs in HostConfig`},
			not: []string{"Dns"}},
		{name: "a key given twice", doc: co(`{"Env":["A=1"],"env":["B=2"]}`), wantCO: `{"Env":["B=2"]}`,
			warnings: []string{`"Env" is given twice`, "the last one counts"}},
		{name: "misplaced connection string", doc: azure(`"cam": {"type": "docker", "settings": {"image": "cam:1"},
  "ServiceClientConnectionString": "HostName=x;SharedAccessKey=y"}`),
			warnings: []string{`line 3`, `modules.cam.ServiceClientConnectionString: unknown key, ignored as edgeAgent ignores it`}},
		{name: "unknown runtime setting", doc: strings.Replace(azure(`"cam": {"settings": {"image": "cam:1"}}`), `"type": "docker"}`,
			`"type": "docker", "settings": {"minDockerVersoin": "v1.25", "nope": 1}}`, 1),
			warnings: []string{`runtime.settings.minDockerVersoin: unknown key, ignored`, `did you mean "minDockerVersion"?`,
				`runtime.settings.nope: unknown key, ignored`}},
		{name: "unknown settings key", doc: azure(`"cam": {"settings": {"image": "cam:1", "imgae": "x"}}`),
			warnings: []string{`settings.imgae: unknown key, ignored as edgeAgent ignores it (it reads image`, `did you mean "image"?`}},
		{name: "unknown route key", doc: strings.Replace(azure(`"cam": {"settings": {"image": "cam:1"}}`), `"routes": {}`,
			`"routes": {"r": {"route": "FROM /messages/* INTO $upstream", "priorty": 1}}`, 1),
			warnings: []string{`routes.r.priorty`, `did you mean "priority"?`}},
		{name: "unknown $edgeHub key", doc: strings.Replace(azure(`"cam": {"settings": {"image": "cam:1"}}`), `"routes": {}`,
			`"routes": {}, "storeAndForwardConfig": {"timeToLiveSecs": 5}`, 1),
			warnings: []string{`$edgeHub."properties.desired".storeAndForwardConfig: unknown key, ignored as edgeHub ignores it (did you mean "storeAndForwardConfiguration"?)`}},
		// The rest of the outer document, as Json.NET reads it.
		{name: "startupOrder as a string, status in capitals", doc: azure(`"cam": {"status": "Running", "restartPolicy": "On-Failure", "startupOrder": "1", "version": 2,
  "settings": {"image": "cam:1"}}`)},
		{name: "env values as Json.NET writes them", doc: azure(`"cam": {"settings": {"image": "cam:1"}, "env": {"B": {"value": true}, "F": {"value": 1.50}}}`),
			env: "B=True F=1.5"},
		// IoT Hub removes a desired property set to null, so edgeAgent
		// reads {"value": null} as {}, and EnvVal(null) is "" (EnvVal.cs:
		// value ?? string.Empty); an entry set to null is no entry.
		{name: "env without a value", doc: azure(`"cam": {"settings": {"image": "cam:1"}, "env": {"A": {"value": null}, "B": {}, "C": {"value": "x"}, "D": null}}`),
			env: "A= B= C=x", warnings: []string{`env.A.value: null: the variable is set empty, as edgeAgent sets it (IoT Hub drops a null desired property)`,
				`env.B: no "value": the variable is set empty, as edgeAgent sets it`, `env.D: null: no variable (IoT Hub drops a null desired property)`}},
		// https://github.com/OPCFoundation/UA-EdgeTranslator/blob/main/deployment.template.json
		// writes imagePullPolicy in settings, where edgeAgent does not read it.
		{name: "a module key in settings", doc: azure(`"cam": {"settings": {"image": "cam:1", "imagePullPolicy": "never"}}`),
			warnings: []string{`settings.imagePullPolicy: unknown key, ignored as edgeAgent ignores it`, `imagePullPolicy belongs to the module, beside restartPolicy, not in settings`}},
		{name: "twin metadata", doc: strings.Replace(azure(`"cam": {"settings": {"image": "cam:1"}}`), `"schemaVersion": "1.1",
"runtime"`, `"schemaVersion": "1.1", "$version": 7, "$metadata": {"$lastUpdated": "2024-01-01"},
"runtime"`, 1)},
		{name: "createOptions as an object", doc: azure(`"cam": {"settings": {"image": "cam:1", "createOptions": {"HostConfig": {"Privileged": "true"}}}}`),
			wantCO: `{"HostConfig":{"Privileged":true}}`},
		{name: "$upstream image", doc: azure(`"sensor": {"settings": {"image": "$upstream:443/azureiotedge-simulated-temperature-sensor:1.5"}}`),
			image: "$upstream:443/azureiotedge-simulated-temperature-sensor:1.5"},
		{name: "chunks in order, any case", doc: azure(`"cam": {"settings": {"image": "cam:1", "CREATEOPTIONS": "{\"Env\":", "createoptions01": "[\"A=1\"]}"}}`),
			wantCO: `{"Env":["A=1"]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse([]byte(tc.doc))
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			mod := m.Modules[0]
			if tc.wantCO != "" && string(mod.CreateOptions) != tc.wantCO {
				t.Errorf("createOptions %s, want %s", mod.CreateOptions, tc.wantCO)
			}
			if _, err := DecodeCreateOptions(mod.CreateOptions); err != nil {
				t.Errorf("canonical createOptions %s do not decode: %v", mod.CreateOptions, err)
			}
			if tc.image != "" && mod.Image != tc.image {
				t.Errorf("image %q, want %q", mod.Image, tc.image)
			}
			if tc.env != "" {
				var got []string
				for _, k := range slices.Sorted(maps.Keys(mod.Env)) {
					got = append(got, k+"="+mod.Env[k])
				}
				if strings.Join(got, " ") != tc.env {
					t.Errorf("env %v, want %s", got, tc.env)
				}
			}
			for _, w := range tc.warnings {
				found := false
				for _, got := range m.Warnings {
					found = found || strings.Contains(got, w)
				}
				if !found {
					t.Errorf("no warning contains %q; warnings:\n  %s", w, strings.Join(m.Warnings, "\n  "))
				}
			}
			for _, w := range tc.not {
				for _, got := range m.Warnings {
					if strings.Contains(got, w) {
						t.Errorf("warning %q contains %q", got, w)
					}
				}
			}
		})
	}
}

// TestEdgeAgentReadsPolicies: what Json.NET reads case-insensitively and
// converts in the outer document lands in the model.
func TestEdgeAgentReadsPolicies(t *testing.T) {
	m, err := Parse([]byte(azure(`"cam": {"status": "Stopped", "restartPolicy": "On-Failure", "imagePullPolicy": "Never", "startupOrder": "1", "version": 2.5,
  "settings": {"image": "cam:1"}}`)))
	if err != nil {
		t.Fatal(err)
	}
	c := m.Module("cam")
	if c.Status != StatusStopped || c.RestartPolicy != RestartOnFailure || c.ImagePullPolicy != PullNever || c.StartupOrder != 1 || c.Version != "2.5" {
		t.Errorf("got %+v", c)
	}
}

// sys puts system modules into a one-module Azure manifest.
func sys(modules string) string {
	return strings.Replace(azure(`"cam": {"settings": {"image": "cam:1"}}`), `"modules": {`, `"systemModules": {`+modules+`}, "modules": {`, 1)
}

// TestEdgeAgentRefuses: what edgeAgent refuses is refused, naming the
// path as written and where.
func TestEdgeAgentRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want []string
		not  []string
	}{
		{"chunk gap", azure(`"cam": {"settings": {"image": "cam:1", "createOptions": "{\"Env\":", "createOptions02": "[\"A=1\"]}"}}`),
			[]string{"settings.createOptions02", "createOptions01 is missing", "gap"}, nil},
		{"first chunk numbered", azure(`"cam": {"settings": {"image": "cam:1", "createOptions01": "{}"}}`),
			[]string{"first createOptions chunk must be named createOptions"}, nil},
		{"a chunk without a number", azure(`"cam": {"settings": {"image": "cam:1", "createOptions": "{}", "createOptionsOld": "{}"}}`),
			[]string{"settings.createOptionsOld", "no chunk number"}, nil},
		{"path as written", co(`{"HostConfig":{"Memory":"lots"}}`),
			[]string{"settings.createOptions: HostConfig.Memory:", `"lots" is not an integer`, "character 25 of the createOptions value"},
			[]string{"Resources"}},
		{"path as written, lower case", co(`{"hostconfig":{"memory":[1]}}`),
			[]string{"hostconfig.memory: want an integer, got an array"}, nil},
		{"chunked error place", azure(`"cam": {"settings": {"image": "cam:1", "createOptions": "{\"HostConfig\":{\"Privi", "createOptions01": "leged\":\"yes\"}}"}}`),
			[]string{"HostConfig.Privileged", `"yes" is not true or false`, "character 29 of the createOptions value, character 8 of createOptions01"}, nil},
		{"null where edgeAgent wants a value", co(`{"HostConfig":{"Privileged":null}}`), []string{"HostConfig.Privileged: null is not true or false"}, nil},
		{"out of range", co(`{"HostConfig":{"Memory":1e30}}`), []string{"HostConfig.Memory", "out of range"}, nil},
		{"a fraction Docker refuses", co(`{"HostConfig":{"DeviceRequests":[{"Count":1.5}]}}`), []string{"HostConfig.DeviceRequests[0].Count", "want an integer"}, nil},
		{"a string Docker refuses", co(`{"Healthcheck":{"Interval":"30s"}}`), []string{"Healthcheck.Interval", "want an integer, got the string \"30s\""}, nil},
		{"invalid JSON", co(`{"Env": [`), []string{"invalid createOptions", "unexpected end of text"}, nil},
		{"garbage after", co(`{} x`), []string{"invalid createOptions", "after the end of the JSON value"}, nil},
		{"not an object", co(`[1]`), []string{"createOptions must be a JSON object"}, nil},
		{"startupOrder 1e400", azure(`"cam": {"startupOrder": 1e400, "settings": {"image": "cam:1"}}`),
			[]string{"modules.cam.startupOrder", "1e400 is out of range: want 0 to 4294967295"}, []string{"!!float", "yaml", "unmarshal"}},
		{"startupOrder 1e400 in YAML", "version: '1'\nmodules:\n  cam: {image: cam:1, startupOrder: 1e400}\n",
			[]string{"line 3, column 37", "modules.cam.startupOrder", `want an integer, got the string "1e400"`}, []string{"!!", "unmarshal"}},
		// System modules are not run, but edgeAgent reads them: what it
		// refuses there refuses the deployment. The gap is the invalid
		// example of https://github.com/Azure/iotedge/blob/main/doc/CreateOptions.md
		{"chunk gap in a system module", sys(`"edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always", "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.0.1",
  "createOptions": "{\"HostConfig\":{\"PortBindings\"", "createOptions01": ":{\"8883/tcp\":[{\"HostPort\":\"88", "createOptions03": "83\"}]}}}"}}`),
			[]string{"systemModules.edgeHub.settings.createOptions03", "createOptions02 is missing"}, nil},
		{"invalid createOptions in a system module", sys(`"edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5", "createOptions": "{\"HostConfig\":"}}`),
			[]string{"systemModules.edgeAgent.settings.createOptions", "invalid createOptions"}, nil},
		{"a system module without an image", sys(`"edgeHub": {"type": "docker", "settings": {"createOptions": "{}"}}`),
			[]string{"systemModules.edgeHub.image", "an image is required"}, nil},
		// https://github.com/OPCFoundation/UA-EdgeTranslator/blob/main/deployment.template.json
		// comments its env with a string entry: Json.NET cannot make an
		// EnvVal of a string, so edgeAgent refuses the deployment.
		{"a string as an env entry", azure(`"cam": {"settings": {"image": "cam:1"}, "env": {"_comment_X": "set X to 1", "X": {"value": "1"}}}`),
			[]string{"modules.cam.env._comment_X", `an env entry is {"value": ...}, got the string "set X to 1" (edgeAgent refuses it too)`}, nil},
		{"no image", azure(`"cam": {"settings": {"createOptions": "{}"}}`), []string{"modules.cam.image", "an image is required"}, nil},
		{"upper-case repository", azure(`"cam": {"settings": {"image": "Registry.example.com/Camera:1"}}`), []string{"not a valid image reference", "lowercase"}, nil},
		{"$upstream without a port", azure(`"cam": {"settings": {"image": "$upstream/sensor:1"}}`), []string{`must be $upstream:<port>/<repository>`}, nil},
		{"empty registry address", strings.Replace(azure(`"cam": {"settings": {"image": "cam:1"}}`), `"type": "docker"}`,
			`"type": "docker", "settings": {"registryCredentials": {"r": {"username": "u", "password": "p", "address": ""}}}}`, 1),
			[]string{"registryCredentials.r.address", "a registry address is required"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatalf("accepted: %+v", m)
			}
			if len(AsErrors(err)) == 0 {
				t.Errorf("error %T is not a manifest.Errors", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ncontains %q", err, w)
				}
			}
		})
	}
}

// TestResolveUpstream: $upstream is the parent's host name, the port as
// written; a parent given with a port replaces it.
func TestResolveUpstream(t *testing.T) {
	doc := strings.Replace(azure(`"sensor": {"settings": {"image": "$upstream:443/azureiotedge-simulated-temperature-sensor:1.5"}}, "cam": {"settings": {"image": "cam:1"}}`),
		`"type": "docker"}`, `"type": "docker", "settings": {"registryCredentials": {"parent": {"username": "u", "password": "p", "address": "$upstream:443"}}}}`, 1)
	for _, tc := range []struct{ parent, image, address string }{
		{"parent.local", "parent.local:443/azureiotedge-simulated-temperature-sensor:1.5", "parent.local:443"},
		{"10.0.0.2:5000", "10.0.0.2:5000/azureiotedge-simulated-temperature-sensor:1.5", "10.0.0.2:5000"},
		// An IPv6 parent (hub.upstream.host: fd00::2) in brackets, as an
		// image reference writes it; given in brackets, with or without a
		// port, it stays as it is.
		{"fd00::2", "[fd00::2]:443/azureiotedge-simulated-temperature-sensor:1.5", "[fd00::2]:443"},
		{"[fd00::2]", "[fd00::2]:443/azureiotedge-simulated-temperature-sensor:1.5", "[fd00::2]:443"},
		{"[fd00::2]:5000", "[fd00::2]:5000/azureiotedge-simulated-temperature-sensor:1.5", "[fd00::2]:5000"},
	} {
		m, err := Parse([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(m.UpstreamRefs(), ","); got != "modules.sensor,registryCredentials.parent" {
			t.Errorf("refs %s", got)
		}
		written := m.ResolveUpstream(tc.parent)
		if s := m.Module("sensor"); s.Image != tc.image || written["sensor"] == "" || len(written) != 1 {
			t.Errorf("%s: image %q (written %v), want %q", tc.parent, s.Image, written, tc.image)
		}
		if m.Module("cam").Image != "cam:1" || m.RegistryCredentials[0].Address != tc.address {
			t.Errorf("%s: cam %q, address %q", tc.parent, m.Module("cam").Image, m.RegistryCredentials[0].Address)
		}
		if m.Credential(tc.address) == nil {
			t.Errorf("no credential for %s", tc.address)
		}
		if _, err := reference.ParseNormalizedNamed(m.Module("sensor").Image); err != nil {
			t.Errorf("%s: the resolved image %q is not a valid reference: %v", tc.parent, m.Module("sensor").Image, err)
		}
	}
}

// TestEdgeAgentModelPaths: every field the edgeAgent model table names
// is a field of Docker's types, so a typo there cannot pass unnoticed.
func TestEdgeAgentModelPaths(t *testing.T) {
	known := map[string]bool{}
	var walk func(typ reflect.Type, canon string, depth int)
	walk = func(typ reflect.Type, canon string, depth int) {
		if depth > 8 {
			return
		}
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		known[canon] = true
		switch typ.Kind() {
		case reflect.Struct:
			for _, f := range fieldsOf(typ, "json").list {
				walk(f.typ, joinCanon(canon, f.name), depth+1)
			}
		case reflect.Map:
			walk(typ.Elem(), canon+".*", depth+1)
		case reflect.Slice, reflect.Array:
			walk(typ.Elem(), canon+".[]", depth+1)
		}
	}
	walk(reflect.TypeFor[CreateOptions](), "", 0)
	for p := range edgeAgentModel {
		if !known[p] {
			t.Errorf("edgeAgentModel names %q, which Docker's CreateOptions types do not have", p)
		}
	}
}

// TestAzureToolingShapes: documents Microsoft's tooling hands over. The
// Azure CLI (az iot edge set-modules --content, az iot edge deployment
// create) reads modulesContent from the document or from its "content"
// key, reads "moduleContent" as a deprecated spelling, and drops every
// other key before IoT Hub and edgeAgent see the deployment
// (azext_iot/operations/hub.py, _process_config_content). ledge accepts
// the same documents and says what it ignores. Each case is a minimal
// version of a published manifest that ledge refused.
func TestAzureToolingShapes(t *testing.T) {
	mc := `{"$edgeAgent": {"properties.desired": {"schemaVersion": "1.0", "runtime": {"type": "docker"},
  "modules": {"mymodule0": {"type": "docker", "settings": {"image": "myimageuri", "createOptions": "{\"MemorySwap\":0}"}}}}},
 "$edgeHub": {"properties.desired": {"schemaVersion": "1.0", "routes": {"route0": "FROM /messages/* INTO $upstream"}}}}`
	for _, tc := range []struct {
		name     string
		doc      string
		warnings []string // substrings, each in one warning
	}{
		// https://github.com/Azure/azure-iot-cli-extension/blob/dev/azext_iot/tests/iothub/configurations/test_edge_deployment.json
		{"az CLI deployment file with metrics", `{"content": {"$schema": "http://json.schemastore.org/azure-iot-edge-deployment-2.0", "modulesContent": ` + mc + `},
 "metrics": {"queries": {"mymetric": "SELECT deviceId FROM devices"}}}`,
			[]string{`line 4, column 2`, `metrics: ignored: ledge reads only "content" of an IoT Hub configuration, as the Azure CLI does`}},
		// the shape `az iot edge deployment show` prints: a Configuration
		{"az iot edge deployment show output", `{"id": "d1", "schemaVersion": "1.0", "labels": {}, "content": {"modulesContent": ` + mc + `, "moduleContent": {}, "deviceContent": {}},
 "targetCondition": "tags.env='prod'", "priority": 10, "etag": "MQ==", "metrics": {"queries": {}}}`,
			[]string{`line 1, column 2 (byte 1): id: ignored, with schemaVersion, labels, targetCondition, priority, etag and metrics: ledge reads only "content" of an IoT Hub configuration, as the Azure CLI does`}},
		// https://github.com/OPCFoundation/UA-EdgeTranslator/blob/main/deployment.template.json
		{"a comment key next to modulesContent", `{"$schema-template": "4.0.0", "_comment": "Apply with az iot edge set-modules", "modulesContent": ` + mc + `}`,
			[]string{`line 1, column 31`, `_comment: unknown key next to modulesContent, ignored (the Azure CLI drops it before IoT Hub sees the deployment)`}},
		// https://github.com/MicrosoftDocs/azure-docs/blob/3a0f3c1/articles/iot-edge/module-composition.md (2018)
		{"moduleContent, the deprecated spelling", `{"moduleContent": ` + mc + `}`,
			[]string{`moduleContent: "moduleContent" is the deprecated spelling of "modulesContent"`}},
		{"content holding moduleContent", `{"content": {"moduleContent": ` + mc + `}}`,
			[]string{`content.moduleContent: "moduleContent" is the deprecated spelling`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse([]byte(tc.doc))
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if m.Format != FormatAzure || m.Module("mymodule0") == nil || m.Sections[SectionRoutes] == nil {
				t.Fatalf("read as %s with modules %v", m.Format, m.Modules)
			}
			for _, w := range tc.warnings {
				found := false
				for _, got := range m.Warnings {
					found = found || strings.Contains(got, w)
				}
				if !found {
					t.Errorf("no warning contains %q; warnings:\n  %s", w, strings.Join(m.Warnings, "\n  "))
				}
			}
			if n := len(m.Warnings); n > 3 {
				t.Errorf("%d warnings, want one per kind of thing ignored:\n  %s", n, strings.Join(m.Warnings, "\n  "))
			}
			for _, got := range m.Warnings {
				if strings.Contains(got, "$schema") || strings.Contains(got, "deviceContent") || strings.Contains(got, "content.moduleContent: ignored") {
					t.Errorf("noisy warning: %s", got)
				}
			}
			// WithVersion finds the deployment in the same places.
			out, err := WithVersion([]byte(tc.doc), "7")
			if err != nil {
				t.Fatalf("WithVersion: %v", err)
			}
			if m2, err := Parse(out); err != nil || m2.Version != "7" {
				t.Errorf("WithVersion gave %s (%v)", out, err)
			}
		})
	}
	// Still refused: a "content" with nothing ledge can read, and a
	// non-empty deviceContent (an automatic device configuration, not a
	// deployment).
	for _, doc := range []string{`{"content": {"deviceContent": {"properties.desired.x": 1}}}`, `{"content": {"modulesContent": ` + mc + `, "deviceContent": {"properties.desired.x": 1}}}`} {
		if _, err := Parse([]byte(doc)); err == nil || !strings.Contains(err.Error(), "content") {
			t.Errorf("%s: got %v, want an error naming content", doc, err)
		}
	}
}

// TestStockManifestQuiet: a stock Microsoft manifest (the example of
// https://learn.microsoft.com/azure/iot-edge/module-composition, shortened:
// system modules, registry credentials, startupOrder, env, routes as
// objects with priority and timeToLiveSecs, an mqttBroker section of
// $edgeHub 1.2) gives no warning: how ledge reads its standard parts
// (system modules not run, mqttBroker settled in ledge.yaml, no ledge
// version) are notes, not warnings.
func TestStockManifestQuiet(t *testing.T) {
	doc := `{"modulesContent": {
  "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1",
    "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25", "loggingOptions": "",
      "registryCredentials": {"ContosoRegistry": {"username": "myacr", "password": "pw", "address": "myacr.azurecr.io"}}}},
    "systemModules": {
      "edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5", "createOptions": "{}"}},
      "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always", "startupOrder": 0,
        "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5", "createOptions": "{\"HostConfig\":{\"PortBindings\":{\"443/tcp\":[{\"HostPort\":\"443\"}]}}}"}}},
    "modules": {
      "SimulatedTemperatureSensor": {"version": "1.5", "type": "docker", "status": "running", "restartPolicy": "always", "startupOrder": 2,
        "settings": {"image": "mcr.microsoft.com/azureiotedge-simulated-temperature-sensor:1.5", "createOptions": "{}"}},
      "filtermodule": {"version": "1.0", "type": "docker", "status": "running", "restartPolicy": "always", "startupOrder": 1,
        "env": {"tempLimit": {"value": "100"}}, "settings": {"image": "myacr.azurecr.io/filtermodule:latest", "createOptions": "{}"}}}}},
  "$edgeHub": {"properties.desired": {"schemaVersion": "1.2",
    "routes": {"filterToIoTHub": {"route": "FROM /messages/modules/filtermodule/outputs/output1 INTO $upstream", "priority": 1, "timeToLiveSecs": 1800}},
    "storeAndForwardConfiguration": {"timeToLiveSecs": 100},
    "mqttBroker": {"authorizations": [{"identities": ["{{iot:identity}}"], "allow": [{"operations": ["mqtt:connect"]}]}]}}}}}`
	m, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Warnings) != 0 {
		t.Errorf("warnings on a stock manifest:\n  %s", strings.Join(m.Warnings, "\n  "))
	}
	notes := strings.Join(m.Notes, "\n")
	for _, want := range []string{"systemModules (edgeAgent, edgeHub) are not run", "mqttBroker", "no deployment version"} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes lack %q:\n%s", want, notes)
		}
	}
}
