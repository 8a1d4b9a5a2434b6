package yamlstrict

import (
	"strings"
	"testing"
	"time"
)

type inner struct {
	Name  string        `yaml:"name"`
	Count int           `yaml:"count"`
	Every time.Duration `yaml:"every"`
}

type base struct {
	Shared string `yaml:"shared"`
}

type doc struct {
	base  `yaml:",inline"`
	Top   string            `yaml:"top"`
	Inner inner             `yaml:"inner"`
	List  []inner           `yaml:"list"`
	Map   map[string]inner  `yaml:"map"`
	Free  map[string]any    `yaml:"free"`
	Ptr   *inner            `yaml:"ptr"`
	Strs  map[string]string `yaml:"strs"`
	Plain string
}

type withExtra struct {
	Known string         `yaml:"known"`
	Extra map[string]any `yaml:",inline"`
}

func TestDecode(t *testing.T) {
	var d doc
	err := Decode([]byte(`
shared: s
top: t
inner: {name: a, count: 2, every: 3s}
list:
  - name: b
map:
  k: {name: c}
free: {anything: [1, 2], goes: {here: true}}
ptr: {count: 5}
plain: p
`), &d)
	if err != nil {
		t.Fatal(err)
	}
	if d.Shared != "s" || d.Top != "t" || d.Inner.Count != 2 || d.Inner.Every != 3*time.Second ||
		d.List[0].Name != "b" || d.Map["k"].Name != "c" || d.Ptr.Count != 5 || d.Plain != "p" || d.Free["goes"] == nil {
		t.Errorf("got %+v", d)
	}
	var e withExtra
	if err := Decode([]byte("known: k\nother: 1\n"), &e); err != nil || e.Extra["other"] != 1 {
		t.Errorf("inline map: %+v, %v", e, err)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"top", "top: x\ntpo: y\n", []string{"line 2", `unknown key "tpo"`, `did you mean "top"`}},
		{"nested", "inner:\n  name: a\n  colour: red\n", []string{"line 3", "inner.colour"}},
		{"in list", "list:\n  - name: a\n  - nmae: b\n", []string{"line 3", "list[1].nmae", `"name"`}},
		{"in map", "map:\n  k:\n    bad: 1\n", []string{"line 3", "map.k.bad"}},
		{"in pointer", "ptr: {zzz: 1}\n", []string{"ptr.zzz"}},
		{"type", "inner:\n  count: many\n", []string{"line 2", "inner.count", "got `many`, want int"}},
		// Several values on one line (a flow mapping): the path names the
		// one that is wrong, not the first on the line.
		{"type in flow", "inner: {name: a, count: many}\n", []string{"line 1", "inner.count:", "got `many`, want int"}},
		{"type in flow list", "list: [{name: a}, {name: b, count: x}]\n", []string{"line 1", "list[1].count:"}},
		{"duration", "inner: {name: a, every: soon}\n", []string{"inner.every:", "got `soon`, want a duration (500ms, 5s, 2m, 1h)"}},
		// A mapping or a list where a value goes: the key that holds it.
		{"map for a scalar in flow", "inner: {name: a, count: {x: 1}}\n", []string{"line 1", "inner.count:", "got a mapping, want int"}},
		{"map for a scalar", "inner:\n  name: a\n  count: {x: 1}\n", []string{"line 3", "inner.count:", "got a mapping, want int"}},
		{"list for a scalar", "top:\n  - a\n", []string{"line 2", "top:", "got a list, want string"}},
		{"map for a duration", "inner: {every: {s: 1}}\n", []string{"inner.every:", "got a mapping, want a duration"}},
		{"map in a map of strings", "strs:\n  line: 3\n  floor: {a: 1}\n", []string{"line 3", "strs.floor:", "got a mapping, want string"}},
		{"alias", "a: &x {bogus: 1}\n", []string{`unknown key "a"`}},
		{"two docs", "top: a\n---\ntop: b\n", []string{"more than one"}},
		{"syntax", "top: [unclosed\n", []string{"invalid YAML"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d doc
			err := Decode([]byte(tc.in), &d)
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestDecodeEmpty(t *testing.T) {
	d := doc{Top: "default"}
	if err := Decode(nil, &d); err != nil || d.Top != "default" {
		t.Errorf("empty document: %+v, %v", d, err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("top: t\ninner: {name: a}\nlist: [{count: 1}]\n"))
	f.Add([]byte("a: &x [1]\nb: *x\n"))
	f.Add([]byte("map: {k: {every: 1s}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var d doc
		err := Decode(data, &d)
		if err != nil && err.Error() == "" {
			t.Fatal("empty error message")
		}
	})
}

// TestSuggest: a look-alike, a name in another case, or the start of a
// long name is suggested; a short or unrelated key is not.
func TestSuggest(t *testing.T) {
	known := []string{"storeAndForwardConfiguration", "routes", "schemaVersion"}
	for key, want := range map[string]string{
		"storeAndForwardConfig": "storeAndForwardConfiguration",
		"Routes":                "routes",
		"schemaVerison":         "schemaVersion",
		"sto":                   "",
		"timeToLiveSecs":        "",
	} {
		if got := Suggest(key, known); got != want {
			t.Errorf("Suggest(%q) = %q, want %q", key, got, want)
		}
	}
}
