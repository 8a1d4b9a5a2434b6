package hub

import (
	"encoding/json"
	"strings"
	"testing"

	"ledge/internal/fault"
)

// FuzzMergePatch: a reported patch from a device (outside input) is
// refused with a fault or gives a section within the limits that
// passes the same checks again and is valid JSON; it never panics.
func FuzzMergePatch(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":{"b":null}}`, `{"a.b":1}`, `{"$version":3,"x":[1,2]}`, `{"n":4503599627370496}`,
		`{"n":1e400}`, `{"a":[null]}`, `not json`, `[]`, `{"s":"\u0000"}`, `{"k\u0007":1}`} {
		f.Add([]byte(`{"base":{"x":1}}`), []byte(s))
	}
	f.Fuzz(func(t *testing.T, base, patch []byte) {
		section := map[string]any{}
		if json.Unmarshal(base, &section) != nil {
			section = map[string]any{}
		}
		next, applied, err := mergePatch(section, patch, true)
		if err != nil {
			return
		}
		if err := checkTwinProperties(applied, "", 1, true); err != nil {
			t.Fatalf("the applied patch fails the checks it passed: %v", err)
		}
		b, err := json.Marshal(next)
		if err != nil || len(b) > MaxTwinSection {
			t.Fatalf("section %d bytes, %v", len(b), err)
		}
		var back map[string]any // as twins.load reads it
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("the section as saved does not load again: %v", err)
		}
	})
}

// TestTwinPropertyPaths: a refused twin patch names the property with
// the field path every error uses (yamlstrict.Field and Index): keys
// joined by dots, [i] for array items, a key that holds a dot, white
// space or a control character quoted, so the path is unambiguous and no
// raw control character reaches a message.
func TestTwinPropertyPaths(t *testing.T) {
	for _, tc := range []struct {
		patch string
		rules bool // a reported patch from a device
		want  string
	}{
		{`{"n": {"big": 1e400}}`, false, "twin property n.big: number 1e400 is out of range"},
		{`{"a.b": {"c": 1e400}}`, false, `twin property "a.b".c: number 1e400 is out of range`},
		{`{"l": [1, {"n": 1e400}]}`, false, "twin property l[1].n: number 1e400 is out of range"},
		{`{"x": {"bad key": 1}}`, true, `twin property name x."bad key": " " is not allowed in a name`},
		{`{"x": {"k\u001b[2J": 1}}`, true, `twin property name x."k\x1b[2J": "\x1b" is not allowed in a name`},
		{`{"x": [null]}`, true, "twin property x: an array may not hold null (item 0)"},
		{`{"x": {"n": 4503599627370496}}`, true, "twin property x.n: integer 4503599627370496 out of range"},
	} {
		_, _, err := mergePatch(map[string]any{}, []byte(tc.patch), tc.rules)
		if !fault.Is(err, fault.Invalid) || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("patch %s: %v, want %s", tc.patch, err, tc.want)
		}
	}
}

// TestTwinNumberOutOfRange: a number no float64 holds (1e400), in a
// desired patch from the API or a reported one from a device, is refused
// naming the property; the twin keeps loading (saved, it could not be
// read again: every later GET would fail).
func TestTwinNumberOutOfRange(t *testing.T) {
	h := startHub(t, nil, false)
	dev := h.addIdentity(t, IdentitySpec{Name: "thermo"})
	if _, err := h.PatchDesired(t.Context(), "thermo", []byte(`{"ok": 1, "n": {"big": 1e400}}`)); !fault.Is(err, fault.Invalid) || !strings.Contains(err.Error(), "twin property n.big: ") {
		t.Errorf("desired 1e400: %v", err)
	}
	got := newReceived()
	c, err := h.sasClient(t, "thermo", dev.PrimaryKey, false, got.handler)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, c.Subscribe("$iothub/twin/res/#", 0, nil))
	mustOK(t, c.Publish("$iothub/twin/PATCH/properties/reported/?$rid=1", 1, false, `{"n": -1e400}`))
	if m := got.next(t, "reported 1e400"); !strings.HasPrefix(m.Topic(), "$iothub/twin/res/400/?$rid=1") || !strings.Contains(string(m.Payload()), `"errorCode":400004`) {
		t.Errorf("reported 1e400: %s %s", m.Topic(), m.Payload())
	}
	if tw, err := h.GetTwin(t.Context(), "thermo"); err != nil || len(tw.Desired) != 0 || len(tw.Reported) != 0 {
		t.Errorf("twin after: %+v %v", tw, err)
	}
}
