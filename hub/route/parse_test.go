package route

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	up := Sink{Upstream: true}
	tests := []struct {
		text   string
		source string
		sink   Sink
		where  string // condition text, "" for none
	}{
		{"FROM /messages/* INTO $upstream", "/messages/", up, ""},
		{"FROM /messages INTO $upstream", "/messages/", up, ""},
		{"FROM /* INTO $UPSTREAM", "/", up, ""},
		{"SELECT * FROM /messages/modules/cam/outputs/* INTO $upstream", "/messages/modules/cam/outputs/", up, ""},
		{"select * from /messages/modules/cam/outputs/alerts where $body.label = 'person' into brokeredendpoint(\"/modules/blink/inputs/in\")",
			"/messages/modules/cam/outputs/alerts/", Sink{Module: "blink", Input: "in"}, "$body.label = 'person'"},
		{"FROM /messages/modules/Cam INTO BrokeredEndpoint('/modules/m/inputs/i')", "/messages/modules/Cam/", Sink{Module: "m", Input: "i"}, ""},
		{`FROM /messages INTO BrokeredEndpoint(" /modules/m/inputs/i/ ")`, "/messages/", Sink{Module: "m", Input: "i"}, ""},
		{`FROM /messages INTO BrokeredEndpoint("modules/m/inputs/i")`, "/messages/", Sink{Module: "m", Input: "i"}, ""},
		{`FROM /messages INTO BrokeredEndpoint("/any/m-1.x/words/in_2")`, "/messages/", Sink{Module: "m-1.x", Input: "in_2"}, ""},
		{"FROM /twinChangeNotifications WHERE twin_change_includes(properties.reported.temp) INTO $upstream",
			"/twinChangeNotifications/", up, "twin_change_includes(properties.reported.temp)"},
		{"FROM /TWINCHANGENOTIFICATIONS/* WHERE twin_change_includes(tags.site) INTO $upstream", "/TWINCHANGENOTIFICATIONS/", up, "twin_change_includes(tags.site)"},
		{"FROM / messages / modules / * INTO $upstream", "/messages/modules/", up, ""},
		{"FROM /messages/modules/1/outputs/select INTO $upstream", "/messages/modules/1/outputs/select/", up, ""},
		{"FROM /messages/modules/a-b.c/outputs/out_1 INTO $upstream", "/messages/modules/a-b.c/outputs/out_1/", up, ""},
		{"  FROM /messages /* all telemetry */ WHERE /* hot */ as_number(t) > 30 /* c */ INTO $upstream  ",
			"/messages/", up, "as_number(t) > 30"},
		{"FROM /messages WHERE a-b = 'c' INTO $upstream", "/messages/", up, "a-b = 'c'"},
		{"FROM /messages WHERE x = -y INTO $upstream", "/messages/", up, "x = -y"},
		{"FROM /messages\nWHERE\tNOT is_defined($connectionModuleId)\r\nINTO $upstream", "/messages/", up, "NOT is_defined($connectionModuleId)"},
	}
	for _, tt := range tests {
		r, err := Parse("r", tt.text)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.text, err)
			continue
		}
		where := ""
		if r.Condition() != nil {
			where = r.Condition().String()
		}
		if r.Source != tt.source || r.Sink != tt.sink || where != tt.where || r.Name != "r" || r.Text != tt.text ||
			r.Priority != DefaultPriority || r.TTL != 0 {
			t.Errorf("Parse(%q) = source %q sink %v where %q prio %d ttl %v\nwant source %q sink %v where %q", tt.text,
				r.Source, r.Sink, where, r.Priority, r.TTL, tt.source, tt.sink, tt.where)
		}
	}
}

func TestSinkString(t *testing.T) {
	if s := (Sink{Upstream: true}).String(); s != "$upstream" {
		t.Errorf("upstream: %q", s)
	}
	if s := (Sink{Module: "Blink", Input: "in"}).String(); s != "/modules/Blink/inputs/in" {
		t.Errorf("module: %q", s)
	}
}

// The FROM table of reference §3.2.
func TestSourceMatching(t *testing.T) {
	sources := []string{
		"/messages",                         // 0 leaf device
		"/messages/modules/m",               // 1 module, no output
		"/messages/modules/m/outputs/o",     // 2
		"/messages/modules/m/outputs/o2",    // 3
		"/messages/modules/m2/outputs/o",    // 4
		"/twinChangeNotifications",          // 5
		"/MESSAGES/Modules/M/OUTPUTS/O",     // 6 case differs
		" /messages/modules/m/outputs/o/ ",  // 7 trailing slash, spaces
		"/messages/modules/m/outputs/other", // 8
		"/messagesX",                        // 9
	}
	tests := []struct {
		from string
		want []int
	}{
		{"/*", []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}}, // 9: "/" prefixes everything
		{"/messages/*", []int{0, 1, 2, 3, 4, 6, 7, 8}},
		{"/messages", []int{0, 1, 2, 3, 4, 6, 7, 8}},
		{"/messages/modules/*", []int{1, 2, 3, 4, 6, 7, 8}},
		{"/messages/modules/m/*", []int{1, 2, 3, 6, 7, 8}},
		{"/messages/modules/m", []int{1, 2, 3, 6, 7, 8}},
		{"/messages/modules/m/outputs/*", []int{2, 3, 6, 7, 8}},
		{"/messages/modules/m/outputs/o", []int{2, 6, 7}},
		{"/messages/modules/M/Outputs/O", []int{2, 6, 7}},
		{"/twinChangeNotifications", []int{5}},
		{"/twinchangenotifications/*", []int{5}},
	}
	for _, tt := range tests {
		r, err := Parse("r", "FROM "+tt.from+" INTO $upstream")
		if err != nil {
			t.Fatal(err)
		}
		var got []int
		for i, s := range sources {
			if r.Matches(&Message{Source: s}) {
				got = append(got, i)
			}
		}
		if !equalInts(got, tt.want) {
			t.Errorf("FROM %s matches %v, want %v", tt.from, got, tt.want)
		}
	}
	if !matchSource("/messages/modules/ǅx", "/MESSAGES/MODULES/ǆX/outputs/o") {
		t.Error("non-ASCII module names do not match case-insensitively")
	}
	if matchSource("/messages/modules/é", "/messages/modules/e") {
		t.Error("é matches e")
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Bad routes fail with the route's name and the byte offset of the problem.
func TestParseErrors(t *testing.T) {
	const w = "FROM /messages WHERE " // conditions start at offset 21
	tests := []struct {
		text string
		pos  int
		msg  string
	}{
		{"", 0, "empty route"},
		{"   /* nothing */ ", 0, "empty route"},
		{"FROM", 4, "expected a source path starting with '/', found the end of the text"},
		{"FROM messages INTO $upstream", 5, "expected a source path"},
		{"INTO $upstream", 0, "expected FROM, found 'INTO'"},
		{"SELECT FROM /messages INTO $upstream", 7, "expected '*' after SELECT"},
		{"FROM /messages", 14, "expected WHERE or INTO after the source"},
		{"FROM /messages/ INTO $upstream", 16, "expected a name or '*' after '/'"},
		{"FROM /message/* INTO $upstream", 6, "unknown source /message"},
		{"FROM /messages/modules/m/inputs/x INTO $upstream", 25, "unknown source"},
		{"FROM /messages/devices/* INTO $upstream", 15, "unknown source"},
		{"FROM /messages/modules/m/outputs/o/x INTO $upstream", 35, "unknown source"},
		{"FROM /twinChangeNotifications/x INTO $upstream", 30, "unknown source"},
		{"FROM /messages/modules/*/outputs/alerts INTO $upstream", 23, "'*' may only end the source path"},
		{"FROM /messages/modules/cam* INTO $upstream", 23, "'*' stands for a whole segment"},
		{"FROM /messages/modules/a[1] INTO $upstream", 23, "expected a name or '*'"},
		{"FROM /messages/* WHERE /* hot */ x = 'a' INTO $upstream", 33, "the '/*' at offset 14 starts a comment that ends at offset 32"},
		{"FROM /* WHERE /* hot */ x = 'a' INTO $upstream", 24, "the '/*' at offset 5 starts a comment"},
		{"FROM /messages INTO $downstream", 20, "unknown sink '$downstream'"},
		{"FROM /messages INTO upstream", 20, "expected a sink"},
		{"FROM /messages INTO", 19, "expected a sink"},
		{`FROM /messages INTO Endpoint("/modules/m/inputs/i")`, 20, "unknown sink function 'Endpoint'"},
		{`FROM /messages INTO BrokeredEndpoint(/modules/m/inputs/i)`, 37, "expected a quoted"},
		{`FROM /messages INTO BrokeredEndpoint("/modules/m/inputs/i"`, 58, "expected ')' after the BrokeredEndpoint address"},
		{`FROM /messages INTO BrokeredEndpoint("/modules/m/inputs")`, 37, "must have the form /modules/<module>/inputs/<input>"},
		{`FROM /messages INTO BrokeredEndpoint("/modules/m/inputs/i/x")`, 37, "must have the form"},
		{`FROM /messages INTO BrokeredEndpoint("/modules//inputs/i")`, 47, "empty module name"},
		{`FROM /messages INTO BrokeredEndpoint("/modules/m/inputs/")`, 37, "must have the form"},
		{`FROM /messages INTO BrokeredEndpoint("/modules/m/inputs//")`, 56, "empty input name"},
		{`FROM /messages INTO BrokeredEndpoint("/modules/a b/inputs/i")`, 48, "not allowed"},
		{`FROM /messages INTO BrokeredEndpoint("/modules/m/inputs/in#")`, 58, "not allowed"},
		{"FROM /messages INTO $upstream extra", 30, "unexpected 'extra' after the sink"},
		{"FROM /messages INTO $upstream INTO $upstream", 30, "unexpected 'INTO' after the sink"},
		{"FROM /messages WHERE INTO $upstream", 21, "expected a value, found 'INTO'"},
		{w + "temp > 30 INTO $upstream", 26, "operator '>' compares values of the same type, not a string and a number (properties are strings: convert with as_number())"},
		{w + "30 < $temp INTO $upstream", 24, "as_number"},
		{w + "temp INTO $upstream", 21, "the condition is a string, not a bool"},
		{w + "as_number(t) + 1 INTO $upstream", 21, "the condition is a number"},
		{w + "x = null INTO $upstream", 23, "test with is_null() or is_defined()"},
		{w + "NOT x INTO $upstream", 21, "NOT needs a bool, not a string"},
		{w + "- x = 1 INTO $upstream", 21, "unary '-' needs a number, not a string"},
		{w + "true < 1 INTO $upstream", 26, "operator '<' compares values of the same type, not a bool and a number"},
		{w + "'a' + 1 = 1 INTO $upstream", 25, "needs numbers"},
		{w + "1 || 'a' = 'a' INTO $upstream", 23, "needs strings"},
		{w + "x AND true INTO $upstream", 23, "needs bools"},
		{w + "(x ?? 1) = 1 INTO $upstream", 24, "needs operands of the same type"},
		{w + "foo(1) INTO $upstream", 21, "unknown function 'foo'"},
		{w + "abs(1, 2) = 1 INTO $upstream", 21, "abs takes 1 argument, not 2"},
		{w + "is_defined() INTO $upstream", 21, "is_defined takes 1 argument, not 0"},
		{w + "substring('a') = 'a' INTO $upstream", 21, "substring takes 2 to 3 arguments, not 1"},
		{w + "concat() = 'a' INTO $upstream", 21, "concat takes 1 or more arguments, not 0"},
		{w + "power(2, 'a') = 1 INTO $upstream", 30, "argument 2 of power must be a number, not a string"},
		{w + "upper(1) = 'A' INTO $upstream", 27, "argument 1 of upper must be a string, not a number"},
		{w + "abs(temp) > 1 INTO $upstream", 25, "convert with as_number()"},
		{w + "abs(1 INTO $upstream", 27, "expected ',' or ')' in the arguments of abs"},
		{w + "x = 'abc INTO $upstream", 25, "unterminated string"},
		{w + `x = 'a\nb' INTO $upstream`, 27, "invalid escape in string"},
		{w + `x = 'a\u12' INTO $upstream`, 27, "invalid escape in string"},
		{w + "(x = 'a' INTO $upstream", 30, "expected ')' to close the '(' at offset 21, found 'INTO'"},
		{w + "x = 'a') INTO $upstream", 28, "expected an operator or INTO after the condition, found ')'"},
		{w + "x = 'a' y = 'b' INTO $upstream", 29, "found 'y'"},
		{w + "x -y INTO $upstream", 23, "put spaces around them"},
		{w + "x @ y INTO $upstream", 23, "found '@' (not a character of the route language)"},
		{w + "x = @ INTO $upstream", 25, "expected a value, found '@'"},
		{w + "x[0] = 1 INTO $upstream", 21, "found 'x[0]' (only $body paths may use [index])"},
		{w + "$x[0] = '1' INTO $upstream", 21, "only $body paths may use [index]"},
		{w + "{x} = '1' INTO $upstream", 22, "expected a $name inside '{ }'"},
		{w + "{$x = '1' INTO $upstream", 25, "expected '}' after '$x'"},
		{w + "$body. = 1 INTO $upstream", 27, "empty $body path"},
		{w + "$body.a..b = 1 INTO $upstream", 29, "expected a property name"},
		{w + "$body.a[x] = 1 INTO $upstream", 29, "the index must be a number"},
		{w + "$body.a[-1] = 1 INTO $upstream", 29, "the index must be a number"},
		{w + "$body.a[1]b = 1 INTO $upstream", 28, "an index is written name[0]"},
		{w + "$body.a[0][1] = 1 INTO $upstream", 28, "an index is written name[0]"},
		{w + "$body.a] = 1 INTO $upstream", 28, "an index is written name[0]"},
		{w + "twin_change_includes(properties.reported.x) INTO $upstream", 21, "only in routes FROM /twinChangeNotifications"},
		{"FROM /twinChangeNotifications WHERE twin_change_includes(foo.x) INTO $upstream", 57, "needs a path under properties.reported."},
		{"FROM /twinChangeNotifications WHERE twin_change_includes('properties.reported.x') INTO $upstream", 57, "needs a path under"},
		{"FROM /twinChangeNotifications WHERE twin_change_includes(properties.reported.) INTO $upstream", 77, "expected a property name"},
		{w + "0xFFFFFFFFFFFFFFFFF = 1 INTO $upstream", 21, "out of range"},
		{w + "e5 = 1 INTO $upstream", 21, "malformed number 'e5'"},
		{w + strings.Repeat("(", 150) + "true" + strings.Repeat(")", 150) + " INTO $upstream", 21 + maxDepth, "nested more than 100 levels"},
		{w + strings.Repeat("NOT ", 150) + "true INTO $upstream", 21 + 4*maxDepth, "nested more than 100 levels"},
		{"FROM /messages WHERE x = '\xff' INTO $upstream", 26, "invalid UTF-8"},
	}
	for _, tt := range tests {
		_, err := Parse("alerts", tt.text)
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("Parse(%q) = %v, want a *ParseError", tt.text, err)
			continue
		}
		if pe.Name != "alerts" || pe.Pos != tt.pos || !strings.Contains(pe.Msg, tt.msg) {
			t.Errorf("Parse(%q)\n got %v\nwant at offset %d: ...%s...", tt.text, err, tt.pos, tt.msg)
		}
		if want := `route "alerts": at offset `; !strings.HasPrefix(err.Error(), want) {
			t.Errorf("Error() = %q, want it to start with %q", err.Error(), want)
		}
	}
}

func TestParseConditionErrors(t *testing.T) {
	tests := []struct {
		text string
		pos  int
		msg  string
	}{
		{"", 0, "empty condition"},
		{"x = 'a' y", 8, "expected an operator or the end of the condition, found 'y'"},
		{"x = ", 4, "expected a value, found the end of the text"},
		{"x = 'a' INTO", 8, "found 'INTO' (a keyword)"},
		{"FROM", 0, "found 'FROM' (a keyword)"},
	}
	for _, tt := range tests {
		_, err := ParseCondition(tt.text)
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Name != "" || pe.Pos != tt.pos || !strings.Contains(pe.Msg, tt.msg) {
			t.Errorf("ParseCondition(%q) = %v, want at offset %d: ...%s...", tt.text, err, tt.pos, tt.msg)
			continue
		}
		if !strings.HasPrefix(err.Error(), "at offset ") {
			t.Errorf("Error() = %q", err.Error())
		}
	}
	// ParseCondition takes any expression; a route only a possible bool.
	if _, err := ParseCondition("as_number(x) + 1"); err != nil {
		t.Errorf("ParseCondition of a number expression: %v", err)
	}
}

func TestModuleSource(t *testing.T) {
	r, err := Parse("r", "FROM /messages/modules/cam/outputs/* INTO $upstream")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		src  string
		want bool
	}{
		{ModuleSource("cam", "alerts"), true},
		{ModuleSource("cam", ""), false},
		{ModuleSource("cam2", "alerts"), false},
		{SourceTelemetry, false},
		{SourceTwinChanges, false},
	}
	for _, tt := range tests {
		if got := r.Matches(&Message{Source: tt.src}); got != tt.want {
			t.Errorf("%s: Matches = %v", tt.src, got)
		}
	}
	if ModuleSource("m", "o") != "/messages/modules/m/outputs/o" || ModuleSource("m", "") != "/messages/modules/m" {
		t.Error("ModuleSource")
	}
}
