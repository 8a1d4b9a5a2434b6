package route

import "testing"

func TestTwinQuery(t *testing.T) {
	doc := []byte(`{"deviceId":"cam-1","tags":{"site":"berlin","hw":"pi5","floor":3},
		"properties":{"reported":{"lastDesiredStatus":{"code":200},"online":true}}}`)
	for _, tc := range []struct {
		cond string
		want bool
	}{
		{`tags.site = 'berlin' AND tags.hw = 'pi5'`, true},
		{`tags.site = 'berlin' AND tags.hw = 'pi4'`, false},
		{`tags.site = 'paris' OR tags.floor >= 3`, true},
		{`tags.floor = '3'`, false}, // a number is not a string
		{`properties.reported.lastDesiredStatus.code = 200`, true},
		{`properties.reported.online = true`, true},
		{`deviceId = 'cam-1'`, true},
		{`tags.missing = 'x'`, false},
		{`NOT is_defined(tags.missing)`, true},
		{`starts_with(deviceId, 'cam-')`, true},
	} {
		c, err := ParseTwinQuery(tc.cond)
		if err != nil {
			t.Fatalf("%s: %v", tc.cond, err)
		}
		if got := c.EvalDoc(doc).IsTrue(); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.cond, got, tc.want)
		}
	}
	if _, err := ParseTwinQuery(`tags.site = `); err == nil {
		t.Error("an incomplete condition parsed")
	}
	if _, err := ParseTwinQuery(`twin_change_includes(tags.site)`); err == nil {
		t.Error("twin_change_includes is for twin change routes, not target conditions")
	}
	// A body that is not a JSON object matches nothing.
	c, _ := ParseTwinQuery(`tags.site = 'berlin'`)
	if c.EvalDoc([]byte(`[1]`)).IsTrue() || c.EvalDoc(nil).IsTrue() {
		t.Error("a non-object document matched")
	}
}

func FuzzTwinQuery(f *testing.F) {
	f.Add(`tags.site = 'berlin' AND tags.hw = 'pi5'`, `{"tags":{"site":"berlin"}}`)
	f.Add(`properties.reported.x.y[0] > 3`, `{"properties":{"reported":{"x":{"y":[4]}}}}`)
	f.Fuzz(func(t *testing.T, cond, doc string) {
		c, err := ParseTwinQuery(cond)
		if err != nil {
			return
		}
		c.EvalDoc([]byte(doc))
	})
}
