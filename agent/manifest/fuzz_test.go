package manifest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func addSamples(f *testing.F) {
	for _, name := range []string{"azure-sample.json", "native-sample.yaml", "native-sample.jsonc"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
}

// checkParsed holds for every accepted manifest: its model encodes, and
// every module's createOptions decode into Docker's types.
func checkParsed(t *testing.T, data []byte) {
	m, err := Parse(data)
	if err != nil {
		if len(AsErrors(err)) == 0 {
			t.Fatalf("error is not a manifest.Errors: %T %v", err, err)
		}
		for _, e := range AsErrors(err) {
			if e.Msg == "" {
				t.Fatalf("error without a message: %+v", e)
			}
			if e.Offset > len(data) {
				t.Fatalf("offset %d past the end (%d bytes)", e.Offset, len(data))
			}
		}
		return
	}
	if _, err := json.Marshal(m); err != nil {
		t.Fatalf("accepted manifest does not encode: %v", err)
	}
	for _, mod := range m.Modules {
		if _, err := DecodeCreateOptions(mod.CreateOptions); err != nil {
			t.Fatalf("module %s: accepted createOptions do not decode: %v", mod.Name, err)
		}
		if !moduleNameRe.MatchString(mod.Name) || mod.Image == "" {
			t.Fatalf("accepted invalid module %+v", mod)
		}
	}
	for name, s := range m.Sections {
		if !json.Valid(s) {
			t.Fatalf("section %s is not JSON: %s", name, s)
		}
	}
}

func FuzzParseNative(f *testing.F) {
	addSamples(f)
	f.Add([]byte("version: '1'\nmodules:\n  a: {image: a:1, createOptions: {HostConfig: {Privileged: true}}}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("version: 1\nroutes: {r: {route: x, priority: 3}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkParsed(t, data)
	})
}

func FuzzParseAzure(f *testing.F) {
	addSamples(f)
	f.Add([]byte(azure(`"cam": {"settings": {"image": "a:1", "createOptions": "{\"Env\":", "createOptions01": "[\"A=1\"]}"}}`)))
	f.Add([]byte(`{"content": {"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1"}}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkParsed(t, data)
		// The same manifest with a comment and a trailing comma means the same.
		s := string(data)
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			commented := "/* c */" + s[:len(s)-1] + ", // t\n}"
			m1, err1 := Parse(data)
			m2, err2 := Parse([]byte(commented))
			if err1 == nil && err2 != nil && !strings.HasSuffix(strings.TrimSpace(s[:len(s)-1]), "{") {
				t.Fatalf("comment and trailing comma broke a valid manifest: %v", err2)
			}
			if err1 == nil && err2 == nil {
				a, _ := json.Marshal(m1)
				b, _ := json.Marshal(m2)
				if string(a) != string(b) {
					t.Fatalf("comments changed the model")
				}
			}
		}
	})
}

// FuzzCreateOptions: whatever text a createOptions holds, reading it
// does not panic; what is accepted decodes into Docker's types, and
// reading the canonical form again gives the same bytes and no warning.
func FuzzCreateOptions(f *testing.F) {
	for _, s := range []string{`{}`, `{"HostConfig":{"Privileged":"true","Memory":"7"}}`, `{Env:['A=1',],/*c*/}`,
		`{"hostconfig":{"LogConfig":{"Config":{"compress":true}}}}`, `{"Cmd":"x","Healthcheck":{"Interval":1e3}}`,
		`{"HostConfig":{"Memory":2.5,"PortBindings":{"80/tcp":[{"HostPort":80}]}}}`, `{"a":1,"a":2}`, `[1]`, `null`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		src := newSource([]byte(text), true)
		ps := &problems{src: src}
		canon := readCreateOptions(src, &coInput{text: text, chunks: []coChunk{{key: "createOptions"}}, given: true}, []string{"createOptions"}, ps)
		if canon == nil {
			if len(ps.list) == 0 {
				t.Fatal("refused without an error")
			}
			return
		}
		if len(ps.list) > 0 {
			t.Fatalf("accepted with errors: %v", ps.err())
		}
		if _, err := DecodeCreateOptions(canon); err != nil {
			t.Fatalf("canonical %s does not decode: %v", canon, err)
		}
		ps2 := &problems{src: newSource(canon, true)}
		again := readCreateOptions(ps2.src, &coInput{text: string(canon), given: true}, []string{"createOptions"}, ps2)
		if string(again) != string(canon) || len(ps2.warnings) > 0 || len(ps2.list) > 0 {
			t.Fatalf("canonical %s read again gives %s (warnings %v, errors %v)", canon, again, ps2.warnings, ps2.list)
		}
	})
}
