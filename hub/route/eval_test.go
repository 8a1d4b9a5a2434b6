package route

import (
	"math"
	"testing"
)

// The query language, case by case: each condition is parsed with
// ParseCondition and evaluated on a message.
func TestEval(t *testing.T) {
	plain := &Message{Source: "/messages", App: props("x", "a", "temp", "31.5", "n", "7", "s", "Hello", "e", "")}
	body := `{"temp": 31, "label": "person", "ok": true, "nothing": null, "s": "3",
	          "a": {"b": [ {"c": 1}, {"c": "two", "d": [10, 20]} ], "o": {"k": 1}},
	          "dup": 1, "dup": 2, "\u0061\u0062": "escaped", "Temp": "upper", "arr": [1, 2]}`
	js := jsonMsg(body, "$body.label", "from-app", "x", "a")
	tests := []struct {
		name string
		cond string
		msg  *Message
		want Value
	}{
		// Literals.
		{"true", "true", plain, Bool(true)},
		{"false", "false", plain, Bool(false)},
		{"null", "is_null(null)", plain, Bool(true)},
		{"undefined", "is_defined(undefined)", plain, Bool(false)},
		{"integer", "7 = 7.0", plain, Bool(true)},
		{"negative integer", "-7 < 0", plain, Bool(true)},
		{"hex", "0x1F = 31", plain, Bool(true)},
		{"hex upper", "0XfF = 255", plain, Bool(true)},
		{"real", "1.5e1 = 15", plain, Bool(true)},
		{"real no leading digit", ".5 = 0.5", plain, Bool(true)},
		{"real exponent only", "2E3 = 2000", plain, Bool(true)},
		{"double quoted", `"a" = 'a'`, plain, Bool(true)},
		{"escaped quote", `'it\'s' = "it's"`, plain, Bool(true)},
		{"escaped double quote", `"say \"hi\"" = 'say "hi"'`, plain, Bool(true)},
		{"escaped backslash", `length('\\') = 1`, plain, Bool(true)},
		{"backslash then u is not an escape", `length('\\u0041') = 6`, plain, Bool(true)},
		{"unicode escape", `'\u0041\u00e9' = 'Aé'`, plain, Bool(true)},
		{"surrogate pair", `'\uD83D\uDE00' = '😀'`, plain, Bool(true)},
		{"comment", "/* always */ true /* really */", plain, Bool(true)},
		{"whitespace and newlines", "\n\ttrue\r\n", plain, Bool(true)},

		// Case rules.
		{"keywords any case", "x = 'a' aNd NOT (x = 'b') oR false", plain, Bool(true)},
		{"TRUE is a property name", "TRUE = 'yes'", &Message{App: props("TRUE", "yes")}, Bool(true)},
		{"Null is a property name", "is_defined(Null)", plain, Bool(false)},
		{"function names any case", "IS_DEFINED(x) AND As_Number(n) = 7", plain, Bool(true)},
		{"app property lookup ignores case", "TEMP = '31.5'", plain, Bool(true)},
		{"system property lookup ignores case", "$CONTENTTYPE = 'application/json'", js, Bool(true)},
		{"string equality is case-sensitive", "x = 'A'", plain, Bool(false)},
		{"string order is ordinal", "'B' < 'a'", plain, Bool(true)},
		{"starts_with is case-sensitive", "starts_with(s, 'he')", plain, Bool(false)},
		{"starts_with", "starts_with(s, 'He')", plain, Bool(true)},
		{"ends_with", "ends_with(s, 'LLO')", plain, Bool(false)},
		{"contains", "contains(s, 'ell')", plain, Bool(true)},
		{"index_of is case-sensitive", "index_of(s, 'L')", plain, Number(-1)},
		{"$body prefix ignores case", "$BODY.temp = 31", js, Bool(true)},
		{"$body paths are case-sensitive", "$body.Temp = 'upper'", js, Bool(true)},
		{"$body path of another case is another member", "$body.TEMP", js, Undefined()},

		// Properties.
		{"app property", "x = 'a'", plain, Bool(true)},
		{"app properties are strings", "n = '7'", plain, Bool(true)},
		{"missing app property", "missing", plain, Undefined()},
		{"empty app property is defined", "is_defined(e) AND e = ''", plain, Bool(true)},
		{"hyphenated names", "mqtt-retain = 'true'", &Message{App: props("mqtt-retain", "true")}, Bool(true)},
		{"system property", "$messageId = 'm1'", &Message{Sys: props("messageId", "m1")}, Bool(true)},
		{"system property with hyphen", "$absolute-expiry-time = 't'", &Message{Sys: props("absolute-expiry-time", "t")}, Bool(true)},
		{"$name prefers the app property named $name", "$messageId",
			&Message{App: props("$messageId", "app"), Sys: props("messageId", "sys")}, String("app")},
		{"{$name} ignores app properties", "{$messageId}",
			&Message{App: props("$messageId", "app"), Sys: props("messageId", "sys")}, String("sys")},
		{"bare name is never a system property", "is_defined(messageId)", &Message{Sys: props("messageId", "m1")}, Bool(false)},
		{"missing system property", "$userId", plain, Undefined()},
		{"connection module id", "NOT is_defined($connectionModuleId)", &Message{Source: "/messages"}, Bool(true)},

		// as_number.
		{"as_number", "as_number(temp) > 30", plain, Bool(true)},
		{"as_number integer", "as_number(n) = 7", plain, Bool(true)},
		{"as_number of text", "as_number(x)", plain, Undefined()},
		{"as_number of missing", "as_number(missing)", plain, Undefined()},
		{"as_number spaces", "as_number(' 12 ') = 12", plain, Bool(true)},
		{"as_number sign and exponent", "as_number('-1.5e3') = -1500", plain, Bool(true)},
		{"as_number no hex", "as_number('0x10')", plain, Undefined()},
		{"as_number no infinity", "as_number('Inf')", plain, Undefined()},
		{"as_number of a number", "as_number(5) = 5", plain, Bool(true)},
		{"as_number of a body string", "as_number($body.s) = 3", js, Bool(true)},
		{"as_number of a body bool", "as_number($body.ok)", js, Undefined()},

		// is_defined and the type tests.
		{"is_defined present", "is_defined(x)", plain, Bool(true)},
		{"is_defined missing", "is_defined(nope)", plain, Bool(false)},
		{"is_defined body member", "is_defined($body.temp)", js, Bool(true)},
		{"is_defined body missing member", "is_defined($body.nope)", js, Bool(false)},
		{"is_defined body null member", "is_defined($body.nothing)", js, Bool(true)},
		{"is_defined body object", "is_defined($body.a)", js, Bool(false)},
		{"is_defined null", "is_defined(null)", plain, Bool(true)},
		{"is_null body null", "is_null($body.nothing)", js, Bool(true)},
		{"is_null missing", "is_null(nope)", plain, Bool(false)},
		{"is_null string", "is_null(x)", plain, Bool(false)},
		{"is_bool", "is_bool($body.ok) AND NOT is_bool('true')", js, Bool(true)},
		{"is_number", "is_number($body.temp) AND NOT is_number(n)", js, Bool(true)},
		{"is_string", "is_string($body.label) AND NOT is_string(1)", js, Bool(true)},

		// $body with and without a JSON content type.
		{"body number", "$body.temp > 30", js, Bool(true)},
		{"body string", "$body.label = 'person'", jsonMsg(body), Bool(true)},
		{"body bool", "$body.ok = true", js, Bool(true)},
		{"body nested path", "$body.a.b[1].c = 'two'", js, Bool(true)},
		{"body first element", "$body.a.b[0].c = 1", js, Bool(true)},
		{"body index in nested array", "$body.a.b[1].d[1] = 20", js, Bool(true)},
		{"body index out of range", "$body.a.b[5].c", js, Undefined()},
		{"body index on an object", "$body.a[0]", js, Undefined()},
		{"body member of an array", "$body.arr.x", js, Undefined()},
		{"body array is undefined", "$body.arr", js, Undefined()},
		{"body object is undefined", "$body.a.o", js, Undefined()},
		{"body duplicate member: last wins", "$body.dup = 2", js, Bool(true)},
		{"body escaped member name", "$body.ab = 'escaped'", js, Bool(true)},
		{"body content type any case", "$body.temp = 31", withSys(js, "CONTENTTYPE", "Application/JSON", "contentencoding", "UTF-8"), Bool(true)},
		{"body without content type", "$body.temp > 30", withSys(js), Undefined()},
		{"body without content encoding", "$body.temp > 30", withSys(js, "contentType", "application/json"), Undefined()},
		{"body with another content type", "$body.temp > 30", withSys(js, "contentType", "text/plain", "contentEncoding", "utf-8"), Undefined()},
		{"body with a charset parameter", "$body.temp > 30", withSys(js, "contentType", "application/json; charset=utf-8", "contentEncoding", "utf-8"), Undefined()},
		{"body with another encoding", "$body.temp > 30", withSys(js, "contentType", "application/json", "contentEncoding", "latin1"), Undefined()},
		{"body utf-16 with BOM", "$body.label = 'pérson'", &Message{Body: utf16LE(`{"label":"pérson"}`, true),
			Sys: props("contentType", "application/json", "contentEncoding", "utf-16")}, Bool(true)},
		{"body utf-16 without BOM", "$body.label = 'person'", &Message{Body: utf16LE(`{"label":"person"}`, false),
			Sys: props("contentType", "application/json", "contentEncoding", "UTF-16")}, Bool(true)},
		{"body utf-16 big-endian BOM", "$body.label = 'person'", &Message{Body: utf16BE(`{"label":"person"}`),
			Sys: props("contentType", "application/json", "contentEncoding", "utf-16")}, Bool(true)},
		{"body utf-32", "$body.label = 'person'", &Message{Body: utf32LE(`{"label":"person"}`),
			Sys: props("contentType", "application/json", "contentEncoding", "utf-32")}, Bool(true)},
		{"body utf-8 BOM", "$body.t = 1", &Message{Body: []byte("\xef\xbb\xbf{\"t\":1}"),
			Sys: props("contentType", "application/json", "contentEncoding", "utf-8")}, Bool(true)},
		{"body utf-16 odd length", "is_defined($body.t)", &Message{Body: []byte(`{"t":1}`),
			Sys: props("contentType", "application/json", "contentEncoding", "utf-16")}, Bool(false)},
		{"body not JSON", "is_defined($body.t)", jsonMsg(`{"t":1`), Bool(false)},
		{"body root is an array", "is_defined($body.t)", jsonMsg(`[{"t":1}]`), Bool(false)},
		{"body empty", "is_defined($body.t)", jsonMsg(``), Bool(false)},
		{"body app property named $body.x wins", "$body.label = 'from-app'", js, Bool(true)},
		{"{$body.x} reads the body", "{$body.label} = 'person'", js, Bool(true)},
		{"$body.x[i] reads the body", "$body.label[0]", jsonMsg(`{"label":["first"]}`, "$body.label[0]", "app"), String("first")},
		{"body string with escapes", `$body.s = 'a"b\u00e9'`, jsonMsg(`{"s":"a\"b\u00e9"}`), Bool(true)},
		{"body big number", "$body.n > 1e300", jsonMsg(`{"n":1e999}`), Bool(true)},

		// Mismatched types give undefined.
		{"body string against number", "$body.label > 3", js, Undefined()},
		{"body number against string", "$body.temp = '31'", js, Undefined()},
		{"body bool plus number", "$body.ok + 1 = 2", js, Undefined()},
		{"null against number", "$body.nothing = 0", js, Undefined()},
		{"null equals null", "$body.nothing = null", js, Bool(true)},
		{"undefined equals nothing", "undefined = undefined", plain, Undefined()},
		{"false before true", "false < true AND true >= true AND NOT (true < false)", plain, Bool(true)},
		{"body bool order", "$body.ok > false", js, Bool(true)},
		{"null orders as equal", "null <= null AND NOT (null < null)", plain, Bool(true)},
		{"missing property compared", "nope = 'a'", plain, Undefined()},

		// Operators and precedence.
		{"arithmetic", "as_number(n) * 2 + 1 = 15", plain, Bool(true)},
		{"multiplication first", "1 + 2 * 3 = 7", plain, Bool(true)},
		{"parentheses", "(1 + 2) * 3 = 9", plain, Bool(true)},
		{"unary minus binds tightest", "- 2 * 3 = -6", plain, Bool(true)},
		{"minus minus", "2 - -1 = 3", plain, Bool(true)},
		{"x -1 is a subtraction", "as_number(n) -1 = 6", plain, Bool(true)},
		{"x -1.5e0 is a subtraction", "as_number(n) -1.5e0 = 5.5", plain, Bool(true)},
		{"left associative", "10 - 4 - 3 = 3", plain, Bool(true)},
		{"modulo", "10 % 4 = 2", plain, Bool(true)},
		{"modulo sign", "-7 % 3 = -1", plain, Bool(true)},
		{"division", "7 / 2 = 3.5", plain, Bool(true)},
		{"division by zero", "1 / 0 > 1e308", plain, Bool(true)},
		{"NaN equals NaN (.NET CompareTo)", "sqrt(-1) = sqrt(-1)", plain, Bool(true)},
		{"NaN sorts first", "sqrt(-1) < -1e308 AND NOT (sqrt(-1) > 0) AND 0 > sqrt(-1)", plain, Bool(true)},
		{"NaN is not a number equal to 0", "sqrt(-1) <> 0", plain, Bool(true)},
		{"concat operator", "x || 'b' = 'ab'", plain, Bool(true)},
		{"concat with missing", "nope || 'b'", plain, Undefined()},
		{"comparisons", "1 < 2 AND 2 <= 2 AND 3 > 2 AND 3 >= 3 AND 1 != 2 AND 1 <> 2", plain, Bool(true)},
		{"comparison before equality", "1 < 2 = true", plain, Bool(true)},
		{"equality before AND", "x = 'a' AND n = '7'", plain, Bool(true)},
		{"AND before OR", "true OR false AND false", plain, Bool(true)},
		{"NOT before AND", "NOT false AND false", plain, Bool(false)},
		{"OR before coalesce", "nope = 'a' OR false ?? true", plain, Bool(true)},
		{"coalesce missing", "nope ?? 'd'", plain, String("d")},
		{"coalesce present", "x ?? 'd'", plain, String("a")},
		{"coalesce keeps null", "is_null($body.nothing ?? 5)", js, Bool(true)},
		{"coalesce chain", "nope ?? undefined ?? 'z'", plain, String("z")},

		// Three-valued logic, with edgeHub's null rules.
		{"true AND undefined", "true AND nope = 'a'", plain, Undefined()},
		{"false AND undefined", "false AND nope = 'a'", plain, Bool(false)},
		{"true OR undefined", "true OR nope = 'a'", plain, Bool(true)},
		{"false OR undefined", "false OR nope = 'a'", plain, Undefined()},
		{"NOT undefined", "NOT (nope = 'a')", plain, Undefined()},
		{"AND with null", "true AND null", plain, Null()},
		{"NOT null", "NOT null", plain, Bool(true)},
		{"null OR false", "null OR false", plain, Bool(false)},
		{"null OR null", "null OR null", plain, Null()},
		{"string in logic", "$body.label AND true", js, Undefined()},

		// Math functions.
		{"abs", "abs(-2) = 2", plain, Bool(true)},
		{"exp", "exp(0) = 1", plain, Bool(true)},
		{"power", "power(2, 10) = 1024", plain, Bool(true)},
		{"square", "square(3) = 9", plain, Bool(true)},
		{"ceiling", "ceiling(1.2) = 2", plain, Bool(true)},
		{"floor", "floor(-1.2) = -2", plain, Bool(true)},
		{"sign", "sign(-5) = -1 AND sign(0) = 0 AND sign(3) = 1", plain, Bool(true)},
		{"sign of NaN", "sign(sqrt(-1))", plain, Undefined()},
		{"sqrt", "sqrt(16) = 4", plain, Bool(true)},
		{"math on a body string", "abs($body.label)", js, Undefined()},

		// String functions.
		{"concat", "concat(x, '-', 'b') = 'a-b'", plain, Bool(true)},
		{"concat one", "concat(x) = 'a'", plain, Bool(true)},
		{"concat with missing", "concat(x, nope)", plain, Undefined()},
		{"length", "length(s) = 5", plain, Bool(true)},
		{"length counts UTF-16 units", "length('é😀') = 3", plain, Bool(true)},
		{"lower", "lower(s) = 'hello'", plain, Bool(true)},
		{"upper", "upper(s) = 'HELLO'", plain, Bool(true)},
		{"substring from", "substring(s, 1) = 'ello'", plain, Bool(true)},
		{"substring from and length", "substring(s, 1, 3) = 'ell'", plain, Bool(true)},
		{"substring truncates indexes", "substring(s, 1.9, 2.9) = 'el'", plain, Bool(true)},
		{"substring at end", "substring(s, 5) = ''", plain, Bool(true)},
		{"substring past end", "substring(s, 6)", plain, Undefined()},
		{"substring too long", "substring(s, 1, 5)", plain, Undefined()},
		{"substring negative", "substring(s, -1)", plain, Undefined()},
		{"substring of missing", "substring(nope, 1)", plain, Undefined()},
		{"index_of", "index_of(s, 'l') = 2", plain, Bool(true)},
		{"index_of counts UTF-16 units", "index_of('😀x', 'x') = 2", plain, Bool(true)},
		{"index_of not found", "index_of(s, 'z')", plain, Number(-1)},
		{"contains missing", "contains(nope, 'a')", plain, Undefined()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCondition(tt.cond)
			if err != nil {
				t.Fatalf("ParseCondition(%q): %v", tt.cond, err)
			}
			got := c.Eval(tt.msg)
			if got != tt.want {
				t.Errorf("%s\n got %s (%s)\nwant %s (%s)", tt.cond, got, got.Kind(), tt.want, tt.want.Kind())
			}
			// Only true routes, the same through a route.
			if c.root.typ == sString || c.root.typ == sNumber {
				return // a route rejects it: it can never be true
			}
			r, err := Parse("t", "FROM /messages WHERE "+tt.cond+" INTO $upstream")
			if err != nil {
				t.Fatalf("as a route: %v", err)
			}
			m := *tt.msg
			if m.Source == "" {
				m.Source = "/messages"
			}
			if r.Matches(&m) != tt.want.IsTrue() {
				t.Errorf("route Matches = %v, want %v", !tt.want.IsTrue(), tt.want.IsTrue())
			}
		})
	}
}

func TestTwinChangeIncludes(t *testing.T) {
	body := `{"version": 3, "properties": {"reported": {"temp": 21, "gone": null, "obj": {"a": 1}}}, "tags": {"site": "x"}}`
	twin := &Message{Source: "/twinChangeNotifications", Body: []byte(body)}
	tests := []struct {
		cond string
		msg  *Message
		want Value
	}{
		{"twin_change_includes(properties.reported.temp)", twin, Bool(true)},
		{"TWIN_CHANGE_INCLUDES(properties.reported.obj)", twin, Bool(true)},
		{"twin_change_includes(properties.reported.obj.a)", twin, Bool(true)},
		{"twin_change_includes(properties.reported.gone)", twin, Bool(false)},
		{"twin_change_includes(properties.reported.nope)", twin, Bool(false)},
		{"twin_change_includes(properties.desired.temp)", twin, Bool(false)},
		{"twin_change_includes(tags.site)", twin, Bool(true)},
		{"twin_change_includes(Properties.Reported.temp)", twin, Bool(false)}, // prefix any case, path exact
		{"twin_change_includes(properties.reported.temp)", &Message{Body: []byte("not json")}, Undefined()},
		{"twin_change_includes(properties.reported.temp)", &Message{Body: utf16LE(body, true), Sys: props("contentEncoding", "utf-16")}, Bool(true)},
	}
	for _, tt := range tests {
		c, err := ParseCondition(tt.cond)
		if err != nil {
			t.Fatalf("ParseCondition(%q): %v", tt.cond, err)
		}
		if got := c.Eval(tt.msg); got != tt.want {
			t.Errorf("%s = %s, want %s", tt.cond, got, tt.want)
		}
	}
	r, err := Parse("twin", "FROM /twinChangeNotifications WHERE twin_change_includes(properties.reported.temp) INTO $upstream")
	if err != nil {
		t.Fatal(err)
	}
	if !r.Matches(twin) {
		t.Error("twin route does not match its notification")
	}
	if r.Matches(&Message{Source: "/messages", Body: []byte(body)}) {
		t.Error("twin route matches telemetry")
	}
}

func TestEvalNilMessage(t *testing.T) {
	c, err := ParseCondition("NOT is_defined(x) AND NOT is_defined($body.a)")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Eval(nil); !got.IsTrue() {
		t.Errorf("Eval(nil) = %s, want true", got)
	}
}

func TestValue(t *testing.T) {
	tests := []struct {
		v    Value
		kind Kind
		str  string
	}{
		{Undefined(), KindUndefined, "undefined"},
		{Value{}, KindUndefined, "undefined"},
		{Null(), KindNull, "null"},
		{Bool(true), KindBool, "true"},
		{Number(1.5), KindNumber, "1.5"},
		{Number(math.Inf(-1)), KindNumber, "-Inf"},
		{String(`it's \`), KindString, `'it\'s \\'`},
	}
	for _, tt := range tests {
		if tt.v.Kind() != tt.kind || tt.v.String() != tt.str {
			t.Errorf("%#v: kind %s, string %s; want %s, %s", tt.v, tt.v.Kind(), tt.v.String(), tt.kind, tt.str)
		}
	}
	if !Bool(true).IsTrue() || Bool(false).IsTrue() || String("true").IsTrue() || Number(1).IsTrue() {
		t.Error("IsTrue is true for something other than the bool true")
	}
	if Number(2).Number() != 2 || String("x").Text() != "x" || !Bool(true).Bool() || String("x").Number() != 0 || Number(1).Text() != "" {
		t.Error("accessors")
	}
	// A string literal renders back to itself.
	for _, s := range []string{"", "a'b", `\`, "é"} {
		c, err := ParseCondition(String(s).String() + " = " + String(s).String())
		if err != nil || !c.Eval(nil).IsTrue() {
			t.Errorf("literal %s does not round-trip: %v", String(s), err)
		}
	}
}

func TestLookupFold(t *testing.T) {
	m := map[string]string{"ContentType": "a", "\u212Aey": "kelvin", "x": "1", "X": "2"}
	tests := []struct {
		key, want string
		ok        bool
	}{
		{"contenttype", "a", true},
		{"CONTENTTYPE", "a", true},
		{"ContentType", "a", true},
		{"contentTyp", "", false},
		{"key", "kelvin", true}, // U+212A KELVIN SIGN folds to k
		{"x", "1", true},
		{"X", "2", true},
		{"missing", "", false},
	}
	for _, tt := range tests {
		if v, ok := lookupFold(m, tt.key); v != tt.want || ok != tt.ok {
			t.Errorf("lookupFold(%q) = %q, %v; want %q, %v", tt.key, v, ok, tt.want, tt.ok)
		}
	}
	// Several keys folding to the same name: the smallest wins, always.
	dup := map[string]string{"Temp": "1", "TEMP": "2", "tEmp": "3"}
	for range 20 {
		if v, _ := lookupFold(dup, "temp"); v != "2" {
			t.Fatalf("lookupFold with duplicates = %q, want the value of TEMP", v)
		}
	}
	if _, ok := lookupFold(nil, "x"); ok {
		t.Error("found in a nil map")
	}
}
