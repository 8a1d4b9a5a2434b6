package manifest

import (
	"bytes"
	"encoding/json"
	"testing"
)

func decode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return dec.Decode(v)
}

func TestStandardizeJSONC(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"a": 1}`, `{"a": 1}`},
		{"{\"a\": 1, // c\n}", "{\"a\": 1      \n}"},
		{`{"a": [1, 2,], }`, `{"a": [1, 2 ]  }`},
		{`{"a": "//not a comment", "b": "/* nor */"}`, `{"a": "//not a comment", "b": "/* nor */"}`},
		{"{/* a\nb */\"a\": 1}", "{    \n    \"a\": 1}"},
		{`{"a": 1, /* c */ }`, `{"a": 1          }`},
		{`{"a": "x\"//y"}`, `{"a": "x\"//y"}`},
		{`[1,]`, `[1 ]`},
		{"[1,\r\n]", "[1 \r\n]"},
		// A comma after no value is no trailing comma: it stays, for the
		// parser to report (VS Code's JSONC and hujson refuse these too).
		{`{"a": ,}`, `{"a": ,}`},
		{`[,]`, `[,]`},
		{`{,}`, `{,}`},
		{`[1,,]`, `[1,,]`},
	} {
		got, err := StandardizeJSONC([]byte(tc.in))
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if string(got) != tc.want {
			t.Errorf("%q:\n got %q\nwant %q", tc.in, got, tc.want)
		}
		if len(got) != len(tc.in) {
			t.Errorf("%q: length %d, want %d", tc.in, len(got), len(tc.in))
		}
	}
	if _, err := StandardizeJSONC([]byte(`{"a": 1 /* open`)); err == nil {
		t.Error("unclosed block comment accepted")
	}
}

// FuzzStandardizeJSONC: the pre-pass never changes the length, never
// touches string contents or newlines, and what it makes of valid JSON is
// the same JSON.
func FuzzStandardizeJSONC(f *testing.F) {
	for _, s := range []string{`{"a": 1}`, "{\"a\": [1,2,], // x\n}", `{"a": "/*"} /* b */`, `"\\"`, "[1,/*,*/]"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := StandardizeJSONC(data)
		if err != nil {
			return
		}
		if len(out) != len(data) {
			t.Fatalf("length %d, want %d", len(out), len(data))
		}
		for i := range data {
			if (data[i] == '\n') != (out[i] == '\n') {
				t.Fatalf("newline moved at %d", i)
			}
			if out[i] != data[i] && out[i] != ' ' {
				t.Fatalf("byte %d changed to %q, not a space", i, out[i])
			}
		}
		if json.Valid(data) {
			var a, b any
			decode(data, &a)
			if err := decode(out, &b); err != nil {
				t.Fatalf("valid JSON %q became invalid %q: %v", data, out, err)
			}
			ja, _ := json.Marshal(a)
			jb, _ := json.Marshal(b)
			if string(ja) != string(jb) {
				t.Fatalf("valid JSON changed meaning: %s -> %s", ja, jb)
			}
		}
	})
}
