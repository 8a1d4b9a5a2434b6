package pipeline

import (
	"strings"
	"testing"
	"time"
)

func TestParseSpecsYAMLAndJSON(t *testing.T) {
	yamlDoc := `
- name: door
  source: {url: /dev/video0, width: 1280, height: 720, fps: 15, fourcc: MJPG}
  detect: {model: people, threshold: 0.5, classes: [person], maxFps: 5}
  motion: {threshold: 30, hold: 2s}
  zones:
    - name: porch
      polygon: [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]
      loiter: 30s
  tracker: {minFrames: 2, timeout: 1500ms}
  actions:
    - {type: webhook, url: "https://example.net/hook", on: [zone.loiter], zones: [porch]}
    - {type: gpio, chip: gpiochip0, line: 17, pulse: 2s}
`
	jsonDoc := `[{"name": "door", "source": {"url": "/dev/video0", "width": 1280, "height": 720, "fps": 15, "fourcc": "MJPG"},
	  "detect": {"model": "people", "threshold": 0.5, "classes": ["person"], "maxFps": 5},
	  "motion": {"threshold": 30, "hold": "2s"},
	  "zones": [{"name": "porch", "polygon": [[0, 0.5], [1, 0.5], [1, 1], [0, 1]], "loiter": "30s"}],
	  "tracker": {"minFrames": 2, "timeout": "1500ms"},
	  "actions": [{"type": "webhook", "url": "https://example.net/hook", "on": ["zone.loiter"], "zones": ["porch"]},
	              {"type": "gpio", "chip": "gpiochip0", "line": 17, "pulse": "2s"}]}]`
	for name, doc := range map[string]string{"yaml": yamlDoc, "json": jsonDoc} {
		specs, err := ParseSpecs(name, []byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s := specs[0]
		if s.Name != "door" || s.Source.FourCC != "MJPG" || s.Detect.Threshold != 0.5 || s.Motion.Hold != 2*time.Second ||
			s.Zones[0].Loiter != 30*time.Second || len(s.Zones[0].Polygon) != 4 || s.Tracker.Timeout != 1500*time.Millisecond ||
			s.Actions[1].Pulse != 2*time.Second || s.Actions[1].Line != 17 {
			t.Errorf("%s: got %+v", name, s)
		}
	}
}

func TestSpecErrors(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{`[{name: a, source: {url: "ftp://x/y"}}]`, `pipeline "a": source.url: unknown scheme "ftp"`},
		{`[{name: a, source: {url: "testpattern:"}}, {name: b, source: {url: "testpattern:"}, zones: [{name: z, polygon: [[0,0],[1,1]]}]}]`,
			`pipeline "b": zones[0].polygon: want at least 3 points, got 2`},
		{`[{name: a, source: {url: "testpattern:"}, zones: [{name: z, polygon: [[0,0],[1,1],[2,0]]}]}]`,
			`pipeline "a": zones[0].polygon[2]: [2, 0]: want normalised coordinates in 0..1`},
		{`[{name: a, source: {url: "testpattern:"}, zones: [{name: z, polygon: [[0,0],[1,1],[1]]}]}]`,
			`pipeline "a": zones[0].polygon[2]: want [x, y], got 1 numbers`},
		{`[{name: a, source: {url: "testpattern:"}, detect: {model: m.onnx, threshold: 1.5}}]`,
			`pipeline "a": detect.threshold: 1.5: want a score in (0, 1]`},
		{`[{name: a, source: {url: "testpattern:"}, detect: {model: m.onnx, kind: ssd}}]`, `pipeline "a": detect.kind: unknown model kind "ssd"`},
		{`[{name: "a b", source: {url: "testpattern:"}}]`, `pipelines[0].name: "a b"`},
		{`[{name: a, source: {url: ""}}]`, `pipeline "a": source.url: must not be empty`},
		{`[{name: a, source: {url: "testpattern:", loop: true}}]`, `pipeline "a": source.loop: only a file or image set loops`},
		{`[{name: a, source: {url: "testpattern:"}, actions: [{type: mqtt, url: "http://x", qos: 3}]}]`, `pipeline "a": actions[0].qos: 3`},
		{`[{name: a, source: {url: "testpattern:"}, actions: [{type: log, zones: [nowhere]}]}]`, `pipeline "a": actions[0].zones[0]: no zone named "nowhere"`},
		{`[{name: a, source: {url: "testpattern:"}, actions: [{type: log, on: [zone.party]}]}]`, `pipeline "a": actions[0].on[0]: unknown event type "zone.party"`},
		{`[{name: a, source: {url: "testpattern:"}, actions: [{type: snapshot}, {type: snapshot, name: s2}]}]`, `pipeline "a": actions[1].type: one snapshot action`},
		{`[{name: a, source: {url: "testpattern:"}, detekt: {}}]`, `line 1: pipelines[0].detekt: unknown key "detekt" (did you mean "detect"?)`},
		{`[{name: a, source: {url: "testpattern:"}, motion: {hold: soon}}]`, "line 1"},
		{`[{name: a, source: {url: "testpattern:"}, actions: [{type: webhook, url: "https://u:pw@x/"}, {type: webhook, url: "ftp://u:pw@x/"}]}]`, `"ftp://u:xxxxx@x/"`},
	} {
		_, err := ParseSpecs("pipelines", []byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n error %v\n want %q", tc.doc, err, tc.want)
		}
	}
}

func TestPolygonContains(t *testing.T) {
	tri := Polygon{{0, 0}, {1, 0}, {0, 1}}
	for _, tc := range []struct {
		p    Point
		want bool
	}{{Point{0.2, 0.2}, true}, {Point{0.8, 0.8}, false}, {Point{-0.1, 0.5}, false}, {Point{0.49, 0.49}, true}} {
		if got := tri.Contains(tc.p); got != tc.want {
			t.Errorf("%v: got %v", tc.p, got)
		}
	}
}

func FuzzParseSpecs(f *testing.F) {
	f.Add([]byte(`[{name: a, source: {url: "testpattern:"}}]`))
	f.Add([]byte(`[{"name": "b", "source": {"url": "file:/x.mp4", "loop": true}, "detect": {"model": "m.onnx"}}]`))
	f.Add([]byte("- name: c\n  source: {url: rtsp://cam/1}\n  zones: [{name: z, polygon: [[0,0],[1,0],[1,1]]}]\n  actions: [{type: mqtt, url: tcp://b:1883}]\n"))
	f.Add([]byte("- &a {name: d, source: {url: /dev/video0}}\n- *a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		specs, err := ParseSpecs("fuzz", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz: ") {
				t.Fatalf("error does not name the input: %v", err)
			}
			return
		}
		if err := ValidateSpecs(specs, "pipelines"); err != nil {
			t.Fatalf("accepted specs fail validation: %v", err)
		}
		for _, s := range specs {
			if _, err := s.Source.Parse(); err != nil {
				t.Fatalf("accepted source %q does not parse: %v", s.Source.URL, err)
			}
		}
	})
}

func TestActionCooldownValidation(t *testing.T) {
	_, err := ParseSpecs("pipelines", []byte(`[{name: a, source: {url: "testpattern:"}, actions: [{type: log, on: [track.start], cooldown: -1s}]}]`))
	if err == nil || !strings.Contains(err.Error(), "actions[0].cooldown: must not be negative") {
		t.Errorf("a negative cooldown: %v", err)
	}
	if _, err := ParseSpecs("pipelines", []byte(`[{name: a, source: {url: "testpattern:"}, actions: [{type: log, on: [track.start, track.end], cooldown: 1m}]}]`)); err != nil {
		t.Errorf("a log action on track.start and track.end with a cooldown: %v", err)
	}
}

// TestSpecEqual: two specs are the same pipeline when every field is
// equal, an empty list counting as none; what JSON leaves out (an action's
// password and headers) counts too.
func TestSpecEqual(t *testing.T) {
	base := func() Spec {
		return Spec{Name: "door", Source: sourceSpecT{URL: "testpattern:"},
			Detect:  &DetectSpec{Model: "people", Classes: []string{"person"}},
			Zones:   []ZoneSpec{{Name: "porch", Polygon: [][]float64{{0, 0}, {1, 0}, {1, 1}}}},
			Actions: []ActionSpec{{Type: "webhook", URL: "https://example.net/hook", Headers: map[string]string{"X-Key": "1"}}}}
	}
	for _, tc := range []struct {
		name string
		edit func(*Spec)
		want bool
	}{
		{"identical", func(*Spec) {}, true},
		{"empty lists and maps are none", func(s *Spec) {
			s.Events.Types, s.Detect.Classes, s.Zones[0].Classes = []string{}, []string{"person"}, []string{}
			s.Actions[0].On = []string{}
		}, true},
		{"nil detect against none", func(s *Spec) { s.Motion = nil }, true},
		{"a class more", func(s *Spec) { s.Detect.Classes = append(s.Detect.Classes, "car") }, false},
		{"no detect", func(s *Spec) { s.Detect = nil }, false},
		{"zone moved", func(s *Spec) { s.Zones[0].Polygon[2][1] = 0.9 }, false},
		{"action password", func(s *Spec) { s.Actions[0].Password = "secret" }, false},
		{"action header", func(s *Spec) { s.Actions[0].Headers["X-Key"] = "2" }, false},
		{"action headers emptied", func(s *Spec) { s.Actions[0].Headers = map[string]string{} }, false},
		{"source", func(s *Spec) { s.Source.FPS = 5 }, false},
		{"disabled", func(s *Spec) { s.Disabled = true }, false},
	} {
		a, b := base(), base()
		tc.edit(&b)
		if got := a.Equal(b); got != tc.want {
			t.Errorf("%s: Equal %v, want %v", tc.name, got, tc.want)
		}
		if got := b.Equal(a); got != tc.want {
			t.Errorf("%s (swapped): Equal %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestEncodeRoundTrip: Encode writes what ParseSpec reads back as the same
// spec, secrets included (JSON leaves an action's password and headers
// out, so it cannot store a spec).
func TestEncodeRoundTrip(t *testing.T) {
	doc := `
name: door
source: {url: "rtsp://cam:pw@10.0.0.9/s", width: 1280, height: 720, fps: 15, fourcc: MJPG}
detect: {model: people, threshold: 0.5, classes: [person], maxFps: 5}
motion: {threshold: 30, hold: 2s}
zones:
  - name: porch
    polygon: [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]
    loiter: 30s
tracker: {minFrames: 2, timeout: 1500ms}
actions:
  - {type: webhook, url: "https://example.net/hook", on: [zone.loiter], zones: [porch], headers: {X-Key: k1, X-Other: "a: b"}, timeout: 2s, cooldown: 1m}
  - {type: mqtt, url: "tcp://broker:1883", topic: "t/{pipeline}", qos: 1, username: cam, password: "p'w\"d"}
  - {type: gpio, chip: gpiochip0, line: 17, pulse: 2s, activeLow: true}
`
	s, err := ParseSpec("doc", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	text, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseSpec("encoded", text)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if !back.Equal(s) {
		t.Errorf("read back as\n%+v\nwant\n%+v\nencoded:\n%s", back, s, text)
	}
	if back.Actions[0].Headers["X-Key"] != "k1" || back.Actions[1].Password != `p'w"d` {
		t.Errorf("secrets lost: %+v", back.Actions)
	}
}

// TestParseSpecNamesThePipeline: one spec that does not validate (the
// API's POST /pipelines, ledge pipelines add) is named by its pipeline,
// as docs/api.md shows ("pipeline \"gate\": zones[0].polygon: ..."), not
// by the caller's label; a spec without a usable name keeps the label.
func TestParseSpecNamesThePipeline(t *testing.T) {
	_, err := ParseSpec("", []byte(`{"name": "gate", "source": {"url": "testpattern:"}, "zones": [{"name": "z", "polygon": [[0, 0], [1, 1]]}]}`))
	if want := `pipeline "gate": zones[0].polygon: want at least 3 points, got 2`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	_, err = ParseSpec("", []byte(`{"name": "no good", "source": {"url": "testpattern:"}}`))
	if err == nil || !strings.HasPrefix(err.Error(), "pipeline spec: name:") {
		t.Errorf("a spec with a bad name: %v", err)
	}
	_, err = ParseSpec("stored pipeline x", []byte(`{"name": "x", "source": {"url": "testpattern:"}, "detect": {"model": "m.onnx", "threshold": 2}}`))
	if err == nil || !strings.HasPrefix(err.Error(), "stored pipeline x: detect.threshold") {
		t.Errorf("a labelled spec: %v", err)
	}
}
