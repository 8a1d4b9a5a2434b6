package yamlstrict

import (
	"strings"
	"testing"
)

func TestFieldAndIndex(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{Field("", "pipelines"), "pipelines"},
		{Field("pipelines[0]", "detect", "model"), "pipelines[0].detect.model"},
		{Index(Field("", "zones"), 2), "zones[2]"},
		{Field("routes", "a.b"), `routes."a.b"`},
		{Field("env", "A B", ""), `env."A B".""`},
		{Field("x", `say "hi"`), `x."say \"hi\""`},
		{Field("k", strings.Repeat("é", 50)), `k."` + strings.Repeat("é", 38) + `..."`}, // cut, so quoted
		{Field("m", "a\nb"), `m."a\nb"`},
		{Field("m", "tab\there"), `m."tab\there"`},
		{Field("m", "\x1b[31mred"), `m."\x1b[31mred"`},
		{Field("m", "bad\xff"), `m."bad\xff"`},
		{Field("m", "caf\u00e9"), "m.caf\u00e9"}, // printable: as it is
	} {
		if tc.got != tc.want {
			t.Errorf("got %s, want %s", tc.got, tc.want)
		}
	}
}

// TestDecodePathQuotesKeys: a key holding a dot is quoted in the path of
// an error under it, as everywhere else.
func TestDecodePathQuotesKeys(t *testing.T) {
	var v struct {
		Routes map[string]struct {
			Priority int `yaml:"priority"`
		} `yaml:"routes"`
	}
	err := Decode([]byte("routes:\n  a.b: {priority: x}\n"), &v)
	if err == nil || !strings.Contains(err.Error(), `routes."a.b".priority`) {
		t.Fatalf("error %v, want the path routes.\"a.b\".priority", err)
	}
}
