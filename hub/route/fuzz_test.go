package route

import (
	"errors"
	"strings"
	"testing"
)

var fuzzRoutes = []string{
	"FROM /messages/* INTO $upstream",
	"SELECT * FROM /messages/modules/cam/outputs/* WHERE $body.label = 'person' AND $body.score > 0.5 INTO BrokeredEndpoint(\"/modules/blink/inputs/in\")",
	"FROM /twinChangeNotifications WHERE twin_change_includes(properties.reported.temp) INTO $upstream",
	"FROM /messages WHERE NOT is_defined($connectionModuleId) OR as_number(temp) -1 >= 0x1F INTO $upstream",
	"FROM /messages WHERE {$body.a.b[2]} ?? 'x' || \"y\" = lower(upper('\\u00e9\\'')) INTO $upstream",
	"FROM /* WHERE /* c */ true INTO $UPSTREAM",
	"FROM /messages WHERE substring(s, 1, 2) <> concat(a, b, c) AND abs(-1.5e3) % 7 != sign(sqrt(power(2, 3))) INTO $upstream",
	"FROM /messages WHERE (((x = 'a'))) AND null OR undefined INTO $upstream",
	"FROM /messages WHERE temp > 30 INTO $upstream",
	"FROM /messages/modules/*/outputs/x INTO $upstream",
	"FROM /messages INTO BrokeredEndpoint('/modules/m/inputs/i/j')",
	"",
}

// FuzzParse: the route parser never panics; it returns a *ParseError naming
// the route with a position inside the text, or a route whose parts hold
// together.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzRoutes {
		f.Add(s)
	}
	msgs := []*Message{
		{Source: "/messages"},
		jsonMsg(`{"label":"person","score":0.9,"a":{"b":[1,2,"x"]}}`, "temp", "31", "s", "hello"),
		{Source: "/twinChangeNotifications", Body: []byte(`{"properties":{"reported":{"temp":1}}}`)},
	}
	f.Fuzz(func(t *testing.T, text string) {
		r, err := Parse("fuzz", text)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T) is not a *ParseError", err, err)
			}
			if pe.Name != "fuzz" || pe.Pos < 0 || pe.Pos > len(text) || pe.Msg == "" {
				t.Fatalf("bad ParseError %+v for %q (len %d)", pe, text, len(text))
			}
			return
		}
		if !strings.HasPrefix(r.Source, "/") || !strings.HasSuffix(r.Source, "/") || strings.Contains(r.Source, "*") {
			t.Fatalf("source %q", r.Source)
		}
		if !r.Sink.Upstream && (r.Sink.Module == "" || r.Sink.Input == "" || strings.ContainsAny(r.Sink.Module+r.Sink.Input, "/#+ ")) {
			t.Fatalf("sink %+v", r.Sink)
		}
		if c := r.Condition(); c != nil {
			// The condition on its own parses too, to the same value.
			c2, err := ParseCondition(c.String())
			if err != nil {
				t.Fatalf("condition %q of a valid route does not parse alone: %v", c, err)
			}
			for _, m := range msgs {
				if a, b := c.Eval(m), c2.Eval(m); a != b && !(a.Kind() == KindNumber && a.Number() != a.Number()) {
					t.Fatalf("condition %q: %s in the route, %s alone", c, a, b)
				}
			}
		}
		for _, m := range msgs {
			r.Matches(m)
		}
	})
}

// FuzzEval: conditions and messages from the fuzzer; parsing never panics
// and fails only with *ParseError inside the text; evaluation never panics,
// and a route with the condition matches exactly when Eval gives true.
func FuzzEval(f *testing.F) {
	conds := []string{
		"$body.a.b[1] = 2", "as_number(x) > 3 AND is_defined($body.s)", "x ?? 'd' = 'd'",
		"starts_with($body.s, x) OR contains(lower(x), 'a')", "substring(x, as_number(y), 2) = 'a'",
		"length($body.s) % 2 = 0", "NOT (x = 'a') AND $messageId <> 'b'", "twin_change_includes(properties.reported.a)",
		"index_of(x, y) >= 0 AND power($body.n, 2) < 1e9", "{$body.s} || x = 'ab' AND $body.t = true",
	}
	bodies := []string{`{"a":{"b":[1,2,3]},"s":"str","n":3,"t":true}`, `[1]`, `{"s":"\u00e9\ud83d\ude00"}`, `not json`, ``}
	for i, c := range conds {
		f.Add(c, bodies[i%len(bodies)], "application/json", "utf-8", "a", "1")
	}
	f.Add("$body.s = 'x'", "\xff\xfe{\x00}\x00", "application/json", "utf-16", "", "")
	f.Add("$body.s = 'x'", "{\x00\x00\x00}\x00\x00\x00", "application/json", "UTF-32", "", "")
	f.Fuzz(func(t *testing.T, cond, body, ct, enc, x, y string) {
		c, err := ParseCondition(cond)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Pos < 0 || pe.Pos > len(cond) || pe.Name != "" {
				t.Fatalf("ParseCondition(%q): %v (%T)", cond, err, err)
			}
			return
		}
		m := &Message{
			Source: "/messages/modules/m/outputs/o",
			Body:   []byte(body),
			App:    map[string]string{"x": x, "Y": y, "$body.s": y},
			Sys:    map[string]string{"contentType": ct, "contentEncoding": enc, "messageId": x},
		}
		v := c.Eval(m)
		if v.Kind() > KindString {
			t.Fatalf("kind %d", v.Kind())
		}
		if v2 := c.Eval(m); v2 != v && v.Number() == v.Number() {
			t.Fatalf("Eval is not deterministic: %s then %s", v, v2)
		}
		r, err := Parse("fuzz", "FROM /messages WHERE "+cond+" INTO $upstream")
		if err != nil {
			return // e.g. a condition that is a string, or one that mentions INTO
		}
		if r.Matches(m) != v.IsTrue() {
			t.Fatalf("route Matches = %v but Eval = %s", r.Matches(m), v)
		}
	})
}
