package web

import (
	"strings"
	"testing"
)

func TestParseLiveRequest(t *testing.T) {
	for _, tc := range []struct {
		in        string
		want, bad int
		err       string
	}{
		{`{"watch": {"door": 2, "yard": 0}}`, 2, 0, ""},
		{`{"watch": {}}`, 0, 0, ""},
		{`{"watch": {"door": -1, "yard": 61, "gate": 1}}`, 1, 2, ""},
		{`{"watch": [1, 2]}`, 0, 0, "not a watch request"},
		{`hello`, 0, 0, "not a watch request"},
	} {
		want, bad, err := parseLiveRequest([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || len(want) != tc.want || len(bad) != tc.bad {
			t.Errorf("%s: %v %v %v; want %d watched, %d refused", tc.in, want, bad, err, tc.want, tc.bad)
		}
	}
	var b strings.Builder
	b.WriteString(`{"watch": {`)
	for i := range liveMaxWatch + 1 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`"p` + strings.Repeat("x", i) + `": 1`)
	}
	b.WriteString("}}")
	if _, _, err := parseLiveRequest([]byte(b.String())); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("%d pipelines: %v, want a refusal", liveMaxWatch+1, err)
	}
}

// FuzzLiveRequest: whatever a page sends, the request is refused with an
// error or every watched rate is in range and at most liveMaxWatch
// pipelines are watched.
func FuzzLiveRequest(f *testing.F) {
	f.Add([]byte(`{"watch": {"door": 2, "yard": 0}}`))
	f.Add([]byte(`{"watch": {"door": -1e308, "yard": 1e999}}`))
	f.Add([]byte(`{"watch": null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		want, bad, err := parseLiveRequest(data)
		if err != nil {
			if want != nil || bad != nil {
				t.Fatalf("an error and a result: %v %v %v", want, bad, err)
			}
			return
		}
		if len(want)+len(bad) > liveMaxWatch {
			t.Fatalf("%d pipelines accepted", len(want)+len(bad))
		}
		for name, fps := range want {
			if !(fps >= 0 && fps <= 60) {
				t.Fatalf("%s at %v fps accepted", name, fps)
			}
			if _, ok := bad[name]; ok {
				t.Fatalf("%s both watched and refused", name)
			}
		}
	})
}
