package route

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// parseRoute parses "[SELECT *] FROM <source> [WHERE <condition>] INTO
// <sink>" into r (Name and Text already set).
func parseRoute(r *Route) (err *ParseError) {
	p := &parser{name: r.Name, text: r.Text}
	defer catch(&err)
	p.checkText()
	p.toks, p.notes = lex(r.Text)
	if p.peek().kind == tEOF {
		p.fail(0, "empty route: expected FROM <source> INTO <sink>")
	}
	if t := p.peek(); t.kind == tSelect {
		p.next()
		if s := p.next(); s.kind != tMul {
			p.fail(s.pos, "expected '*' after SELECT, found %s", s.describe())
		}
	}
	if t := p.next(); t.kind != tFrom {
		p.fail(t.pos, "expected FROM, found %s", t.describe())
	}
	r.Source, r.srcCmp = p.parseSource()
	p.twinOK = strings.EqualFold(r.srcCmp, "/twinChangeNotifications")
	if t := p.peek(); t.kind == tWhere {
		p.next()
		start := p.peek().pos
		root := p.parseExpr()
		if t := p.peek(); t.kind != tInto {
			p.fail(t.pos, "expected an operator or INTO after the condition, found %s%s", t.describe(), hint(t))
		}
		p.checkCondition(root, start)
		end := p.toks[p.i-1].end()
		r.cond = &Condition{text: r.Text[start:end], root: root}
	} else if t.kind != tInto {
		p.fail(t.pos, "expected WHERE or INTO after the source, found %s%s", t.describe(), p.commentHint(p.toks[p.i-1].end()))
	}
	p.next() // INTO
	r.Sink = p.parseSink()
	if t := p.peek(); t.kind != tEOF {
		p.fail(t.pos, "unexpected %s after the sink", t.describe())
	}
	return nil
}

// commentHint explains a source path swallowed by a comment: in "FROM /*
// WHERE /* note */ ..." the lexer reads "/* WHERE /* note */" as one
// comment, as edgeHub's does.
func (p *parser) commentHint(after int) string {
	for _, c := range p.notes {
		if c.pos >= after && strings.TrimSpace(p.text[after:c.pos]) == "" {
			return fmt.Sprintf(" (the '/*' at offset %d starts a comment that ends at offset %d: write the source without a trailing /*, or drop the comment)", c.pos, c.end())
		}
	}
	return ""
}

// checkText rejects text that is not UTF-8 (positions are byte offsets
// into it).
func (p *parser) checkText() {
	for i := 0; i < len(p.text); {
		r, n := utf8.DecodeRuneInString(p.text[i:])
		if r == utf8.RuneError && n == 1 {
			p.fail(i, "invalid UTF-8")
		}
		i += n
	}
}

// checkCondition rejects conditions that can never be true because their
// value is a string or a number.
func (p *parser) checkCondition(root *node, start int) {
	if root.typ == sString || root.typ == sNumber {
		p.fail(start, "the condition is a %s, not a bool, so it never routes (compare it with something)", root.typ)
	}
}

// parseSource reads ( "/" item )+ and returns the normalised source prefix
// (for Route.Source) and the prefix without its trailing slash.
//
// edgeHub's items are identifiers or "*"; ledge also takes words that its
// lexer reads as keywords or numbers (a module named "1" or "select"). A "*"
// is a whole segment and only the last one: edgeHub would read
// /messages/modules/*/outputs/x literally (it never matches) and cam* as
// cam, so both are errors here. The source must be one of the shapes a
// message can have.
func (p *parser) parseSource() (prefix, cmp string) {
	type item struct {
		text string
		pos  int
	}
	var items []item
	for {
		slash := p.peek()
		if slash.kind != tDiv {
			if len(items) == 0 {
				p.fail(slash.pos, "expected a source path starting with '/', found %s%s", slash.describe(), p.commentHint(p.toks[p.i-1].end()))
			}
			break
		}
		if len(items) > 0 && items[len(items)-1].text == "*" {
			p.fail(items[len(items)-1].pos, "'*' may only end the source path")
		}
		p.next()
		t := p.next()
		if !isSourceItem(t) {
			p.fail(t.pos, "expected a name or '*' after '/' in the source, found %s", t.describe())
		}
		if t.text != "*" && strings.Contains(t.text, "*") {
			p.fail(t.pos, "%s: '*' stands for a whole segment at the end of the path, not part of a name", t.describe())
		}
		items = append(items, item{t.text, t.pos})
	}
	if items[len(items)-1].text == "*" {
		items = items[:len(items)-1]
	}
	segs := make([]string, len(items))
	for i, it := range items {
		segs[i] = it.text
	}
	// Check the shape: /messages[/modules[/<m>[/outputs[/<o>]]]] or
	// /twinChangeNotifications.
	ok := len(segs) == 0
	bad := 0
	switch {
	case ok:
	case strings.EqualFold(segs[0], "messages"):
		ok = true
		switch {
		case len(segs) > 1 && !strings.EqualFold(segs[1], "modules"):
			ok, bad = false, 1
		case len(segs) > 3 && !strings.EqualFold(segs[3], "outputs"):
			ok, bad = false, 3
		case len(segs) > 5:
			ok, bad = false, 5
		}
	case strings.EqualFold(segs[0], "twinChangeNotifications"):
		ok, bad = len(segs) == 1, 1
	}
	if !ok {
		p.fail(items[bad].pos, "unknown source %s: sources are /messages, /messages/modules/<module>, /messages/modules/<module>/outputs/<output> (each with an optional /* at the end), /twinChangeNotifications and /*", "/"+strings.Join(segs, "/"))
	}
	cmp = ""
	if len(segs) > 0 {
		cmp = "/" + strings.Join(segs, "/")
	}
	return cmp + "/", cmp
}

// isSourceItem reports whether t can be a segment of a source path: an
// identifier or "*", or a keyword other than WHERE and INTO, or a number
// (all identifier characters).
func isSourceItem(t token) bool {
	switch t.kind {
	case tID, tMul:
		return true
	case tSelect, tFrom, tAnd, tOr, tNot, tTrue, tFalse, tNull, tUndefined, tInt, tHex, tReal:
		for _, r := range t.text {
			if !isIDChar(r) {
				return false
			}
		}
		return true
	}
	return false
}

// parseSink reads $upstream or BrokeredEndpoint("/modules/<m>/inputs/<i>").
func (p *parser) parseSink() Sink {
	t := p.next()
	switch {
	case t.kind == tSysProp && strings.EqualFold(t.text, "$upstream"):
		return Sink{Upstream: true}
	case t.kind == tSysProp:
		p.fail(t.pos, "unknown sink %s: sinks are $upstream and BrokeredEndpoint(\"/modules/<module>/inputs/<input>\")", t.describe())
	case t.kind == tID && p.peek().kind == tLParen:
		if !strings.EqualFold(t.text, "BrokeredEndpoint") {
			p.fail(t.pos, "unknown sink function %s: sinks are $upstream and BrokeredEndpoint(\"/modules/<module>/inputs/<input>\")", t.describe())
		}
		p.next()
		arg := p.next()
		if arg.kind != tString {
			p.fail(arg.pos, "expected a quoted \"/modules/<module>/inputs/<input>\" in BrokeredEndpoint(), found %s", arg.describe())
		}
		if c := p.next(); c.kind != tRParen {
			p.fail(c.pos, "expected ')' after the BrokeredEndpoint address, found %s", c.describe())
		}
		return p.brokeredEndpoint(arg)
	}
	p.fail(t.pos, "expected a sink ($upstream or BrokeredEndpoint(\"/modules/<module>/inputs/<input>\")), found %s", t.describe())
	return Sink{}
}

// brokeredEndpoint applies edgeHub's rule to the address (the string's raw
// text, escapes not decoded): trimmed, one leading and one trailing '/'
// removed, exactly 4 '/'-separated segments, the second the module and the
// fourth the input. The words "modules" and "inputs" are not checked (as in
// edgeHub); ledge also rejects empty names and characters that cannot be
// part of an MQTT topic level or an Azure module name.
func (p *parser) brokeredEndpoint(arg token) Sink {
	raw := arg.text[1 : len(arg.text)-1]
	lead := len(raw) - len(strings.TrimLeftFunc(raw, unicode.IsSpace))
	s := strings.TrimSpace(raw)
	off := arg.pos + 1 + lead
	if strings.HasPrefix(s, "/") {
		s, off = s[1:], off+1
	}
	s = strings.TrimSuffix(s, "/")
	segs := strings.Split(s, "/")
	if len(segs) != 4 {
		p.fail(arg.pos, "BrokeredEndpoint address %s must have the form /modules/<module>/inputs/<input>", arg.describe())
	}
	for i, seg := range segs {
		if i != 1 && i != 3 {
			off += len(seg) + 1
			continue
		}
		what := "module"
		if i == 3 {
			what = "input"
		}
		if seg == "" {
			p.fail(off, "empty %s name in BrokeredEndpoint address %s", what, arg.describe())
		}
		if j := strings.IndexFunc(seg, badEndpointRune); j >= 0 {
			p.fail(off+j, "%s name %q in BrokeredEndpoint has a character that is not allowed (whitespace, control, '+', '#' or '\\')", what, seg)
		}
		off += len(seg) + 1
	}
	return Sink{Module: segs[1], Input: segs[3]}
}

func badEndpointRune(r rune) bool {
	return r <= ' ' || r == 0x7f || r == '+' || r == '#' || r == '\\' || r == utf8.RuneError ||
		strings.ContainsRune("\u0085\u00a0\u2028\u2029", r)
}
