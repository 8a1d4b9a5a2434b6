package models

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// checkSpec holds for every accepted spec: what would become a path or a
// CLI argument is plain.
func checkSpec(t *testing.T, s Spec) {
	t.Helper()
	if ValidName(s.Name) != "" || ValidVersion(s.Version) != "" {
		t.Fatalf("accepted bad name or version: %q@%q", s.Name, s.Version)
	}
	if d, err := normalizeDigest(s.SHA256); err != nil || d != s.SHA256 {
		t.Fatalf("accepted digest %q", s.SHA256)
	}
	if strings.ContainsAny(s.Name+s.Version, "/\\@ \x00") || strings.Contains(s.Name+s.Version, "..") {
		t.Fatalf("name or version could leave the store: %q@%q", s.Name, s.Version)
	}
	if err := checkURL(s.URL); err != nil {
		t.Fatalf("accepted URL %q: %v", s.URL, err)
	}
	if s.Size < 0 || s.InputWidth < 0 || s.InputHeight < 0 {
		t.Fatalf("negative size: %+v", s)
	}
}

// FuzzParseSection: the models section of a manifest. Whatever comes in,
// no panic; what is accepted is valid and survives a round trip through
// its JSON encoding.
func FuzzParseSection(f *testing.F) {
	d := strings.Repeat("ab", 32)
	for _, seed := range []string{
		`[{"name":"people","version":"2","url":"https://m.example.com/p.onnx","sha256":"` + d + `","kind":"yolox"}]`,
		`{"people":{"version":3,"url":"file:///var/models/p.onnx","sha256":"sha256:` + d + `","labels":["person","car"],"inputSize":"640x480"}}`,
		`[{"name":"a","version":"1","url":"https://h/a","sha256":"` + d + `","signature":{"alg":"ed25519","keyId":"0011223344556677","sig":"` + strings.Repeat("A", 86) + `=="}}]`,
		`[{"name":"a","version":"1","url":"https://h/a","sha256":"` + d + `","size":1024,"inputSize":416}]`,
		`[{"name":"../x","version":"1","url":"https://h/a","sha256":"` + d + `"}]`,
		`[{"name":"a","name":"b"}]`,
		`null`, `[]`, `{}`, `[1]`, `"x"`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		specs, err := ParseSection(raw)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		names := map[string]bool{}
		for _, s := range specs {
			checkSpec(t, s)
			if names[s.Name] {
				t.Fatalf("duplicate name %q accepted", s.Name)
			}
			names[s.Name] = true
		}
		enc, err := json.Marshal(specsForJSON(specs))
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseSection(enc)
		if err != nil {
			t.Fatalf("re-encoded section refused: %v\n%s", err, enc)
		}
		if len(specs) == 0 && len(again) == 0 {
			return
		}
		if !reflect.DeepEqual(again, specs) {
			t.Fatalf("round trip changed the specs:\n%+v\n%+v", specs, again)
		}
	})
}

// specsForJSON writes specs the way a manifest does (inputSize as WxH).
func specsForJSON(specs []Spec) []map[string]any {
	out := []map[string]any{}
	for _, s := range specs {
		m := map[string]any{"name": s.Name, "version": s.Version, "url": s.URL, "sha256": s.SHA256}
		if s.Size != 0 {
			m["size"] = s.Size
		}
		if s.Signature != nil {
			m["signature"] = s.Signature
		}
		if s.Kind != "" {
			m["kind"] = s.Kind
		}
		if s.Labels != nil {
			m["labels"] = s.Labels
		}
		if s.InputWidth != 0 {
			m["inputSize"] = strings.Join([]string{itoa(s.InputWidth), itoa(s.InputHeight)}, "x")
		}
		out = append(out, m)
	}
	return out
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// FuzzParseSpec: the body of POST /api/v1/models.
func FuzzParseSpec(f *testing.F) {
	d := strings.Repeat("0f", 32)
	f.Add([]byte(`{"name":"people","version":"2","url":"https://h/p.onnx","sha256":"` + d + `"}`))
	f.Add([]byte(`{"name":"p","version":"1.0+b","url":"file:///m.onnx","sha256":"` + d + `","labels":[" a "]}`))
	f.Add([]byte(`{"name":"p","version":"1","url":"https://h/p","sha256":"` + d + `"} {}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		s, err := ParseSpec(raw)
		if err != nil {
			return
		}
		checkSpec(t, s)
	})
}

// FuzzParseRef: NAME@VERSION from the command line and the API.
func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"people@2", "a@b@c", "../x@1", "x@1.0+build.7", "@", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		n, v, err := ParseRef(ref)
		if err != nil {
			return
		}
		if n+"@"+v != ref || ValidName(n) != "" || ValidVersion(v) != "" {
			t.Fatalf("%q -> %q %q", ref, n, v)
		}
	})
}

// FuzzParseContentRange: a server's Content-Range header.
func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 100-199/200", "bytes */200", "bytes 0-0/*", "bytes -1-2/3", "bytes 9223372036854775807-/1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		start, total, ok := parseContentRange(v)
		if ok && (start < 0 || total < 0) {
			t.Fatalf("%q -> %d %d", v, start, total)
		}
	})
}
