package route

import (
	"math"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth bounds the nesting of a condition (parentheses, unary operators,
// function arguments), so that hostile input cannot exhaust the stack.
const maxDepth = 100

type parser struct {
	name  string // route name for errors
	text  string
	toks  []token
	notes []token // comments, for hints
	i     int
	depth int
	// twinOK allows twin_change_includes: ParseCondition, or a route FROM
	// /twinChangeNotifications.
	twinOK bool
	// docNames compiles bare names as JSON paths into the document
	// (ParseTwinQuery) instead of application properties.
	docNames bool
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}

// Binary operators by precedence level, loosest first.
var levels = [][]struct {
	tok tokKind
	op  op
}{
	{{tCoalesce, opCoalesce}},
	{{tOr, opOr}},
	{{tAnd, opAnd}},
	{{tEq, opEq}, {tNe1, opNe}, {tNe2, opNe}},
	{{tLt, opLt}, {tLe, opLe}, {tGt, opGt}, {tGe, opGe}},
	{{tPlus, opAdd}, {tMinus, opSub}, {tConcat, opConcat}},
	{{tMul, opMul}, {tDiv, opDiv}, {tMod, opMod}},
}

const additiveLevel = 5

func (p *parser) parseExpr() *node { return p.parseLevel(0) }

func (p *parser) parseLevel(level int) *node {
	if level == len(levels) {
		return p.parseUnary()
	}
	left := p.parseLevel(level + 1)
	for {
		t := p.peek()
		if level == additiveLevel && (t.kind == tInt || t.kind == tReal) && strings.HasPrefix(t.text, "-") {
			// edgeHub's lexer reads "-1" in "x -1" as one negative literal
			// and then rejects the expression; ledge reads it as x - 1.
			p.splitSign()
			t = p.peek()
		}
		found := false
		for _, cand := range levels[level] {
			if t.kind == cand.tok {
				p.next()
				right := p.parseLevel(level + 1)
				left = p.binary(t, cand.op, left, right)
				found = true
				break
			}
		}
		if !found {
			return left
		}
	}
}

// splitSign replaces the signed number token at p.i by a minus and the
// unsigned number.
func (p *parser) splitSign() {
	t := p.toks[p.i]
	minus := token{kind: tMinus, pos: t.pos, text: t.text[:1]}
	num := token{kind: t.kind, pos: t.pos + 1, text: t.text[1:]}
	p.toks = append(p.toks[:p.i+1], p.toks[p.i:]...)
	p.toks[p.i], p.toks[p.i+1] = minus, num
}

func (p *parser) enter(pos int) {
	p.depth++
	if p.depth > maxDepth {
		p.fail(pos, "the condition is nested more than %d levels deep", maxDepth)
	}
}

func (p *parser) parseUnary() *node {
	t := p.peek()
	switch t.kind {
	case tMinus, tNot:
		p.enter(t.pos)
		p.next()
		x := p.parseUnary()
		p.depth--
		n := &node{pos: t.pos, kids: []*node{x}}
		if t.kind == tMinus {
			n.op, n.typ = opNeg, sNumber
			if x.typ.known() && x.typ != sNumber {
				p.fail(t.pos, "unary '-' needs a number, not a %s", x.typ)
			}
		} else {
			n.op, n.typ = opNot, logicType(x.typ, x.typ)
			if x.typ.known() && x.typ != sBool && x.typ != sNull {
				p.fail(t.pos, "NOT needs a bool, not a %s", x.typ)
			}
		}
		return n
	}
	return p.parsePrimary()
}

func logicType(a, b stype) stype {
	if a == sBool && b == sBool {
		return sBool
	}
	return sDyn
}

func (p *parser) parsePrimary() *node {
	t := p.next()
	switch t.kind {
	case tLParen:
		p.enter(t.pos)
		x := p.parseExpr()
		p.depth--
		if c := p.peek(); c.kind != tRParen {
			p.fail(c.pos, "expected ')' to close the '(' at offset %d, found %s", t.pos, c.describe())
		}
		p.next()
		return x
	case tTrue, tFalse:
		return &node{op: opLit, typ: sBool, pos: t.pos, val: Bool(t.kind == tTrue)}
	case tNull:
		return &node{op: opLit, typ: sNull, pos: t.pos, val: Null()}
	case tUndefined:
		return &node{op: opLit, typ: sUndef, pos: t.pos}
	case tString:
		return &node{op: opLit, typ: sString, pos: t.pos, val: String(unescape(t.text[1 : len(t.text)-1]))}
	case tUnterminated:
		if end := t.end(); end < len(p.text) && p.text[end] == '\\' {
			p.fail(end, "invalid escape in string: only \\\" \\' \\\\ and \\uXXXX are allowed")
		}
		p.fail(t.pos, "unterminated string")
	case tInt, tReal:
		f, err := strconv.ParseFloat(t.text, 64)
		if err != nil && !math.IsInf(f, 0) {
			p.fail(t.pos, "malformed number %s", t.describe())
		}
		return &node{op: opLit, typ: sNumber, pos: t.pos, val: Number(f)}
	case tHex:
		u, err := strconv.ParseUint(t.text[2:], 16, 64)
		if err != nil || u > math.MaxInt64 {
			p.fail(t.pos, "hexadecimal number %s is out of range", t.describe())
		}
		return &node{op: opLit, typ: sNumber, pos: t.pos, val: Number(float64(u))}
	case tSysProp:
		return p.sysProp(t, false)
	case tLBrace:
		s := p.next()
		if s.kind != tSysProp {
			p.fail(s.pos, "expected a $name inside '{ }', found %s", s.describe())
		}
		if c := p.next(); c.kind != tRBrace {
			p.fail(c.pos, "expected '}' after %s, found %s", s.describe(), c.describe())
		}
		n := p.sysProp(s, true)
		n.pos = t.pos
		return n
	case tID:
		if p.peek().kind == tLParen {
			return p.call(t)
		}
		if p.docNames {
			return &node{op: opDoc, typ: sDyn, pos: t.pos, name: t.text, path: p.jsonPath(t.text, t.pos, "property")}
		}
		return &node{op: opApp, typ: sString, pos: t.pos, name: t.text}
	}
	p.fail(t.pos, "expected a value, found %s%s", t.describe(), hint(t))
	return nil
}

// hint adds advice for tokens that people write by mistake.
func hint(t token) string {
	switch {
	case t.kind == tUnknown:
		return " (not a character of the route language)"
	case t.kind == tQueryPath:
		return " (only $body paths may use [index])"
	case t.kind == tID && len(t.text) > 1 && strings.ContainsAny(t.text[:1], "-+*%|!"):
		return " (operators next to a name are read as part of it: put spaces around them)"
	case t.kind >= tSelect && t.kind <= tInto, t.kind == tAnd, t.kind == tOr:
		return " (a keyword)"
	}
	return ""
}

// sysProp compiles $name, $body.path and their {escaped} forms.
func (p *parser) sysProp(t token, escaped bool) *node {
	if len(t.text) >= 6 && strings.EqualFold(t.text[:6], "$body.") {
		path := p.jsonPath(t.text[6:], t.pos+6, "$body")
		return &node{
			op: opBody, typ: sDyn, pos: t.pos, name: t.text, path: path,
			appFirst: !escaped && !strings.ContainsAny(t.text, "[]"),
		}
	}
	if strings.ContainsAny(t.text, "[]") {
		p.fail(t.pos, "%s is not a property name: only $body paths may use [index]", t.describe())
	}
	n := &node{op: opSys, typ: sString, pos: t.pos, name: t.text, sys: t.text[1:]}
	if escaped {
		n.op = opSysOnly
	}
	return n
}

// jsonPath checks a $body query (or a twin_change_includes path) against
// edgeHub's JsonPath grammar: names separated by dots, each optionally
// followed by one [index]. pos is the offset of s in the text.
func (p *parser) jsonPath(s string, pos int, what string) []pathSeg {
	if s == "" {
		p.fail(pos, "empty %s path", what)
	}
	var segs []pathSeg
	for off := 0; ; {
		end := strings.IndexByte(s[off:], '.')
		if end < 0 {
			end = len(s)
		} else {
			end += off
		}
		seg := s[off:end]
		name, index := seg, -1
		if i := strings.IndexAny(seg, "[]"); i >= 0 {
			name = seg[:i]
			if seg[i] != '[' || !strings.HasSuffix(seg, "]") || len(seg)-i < 3 ||
				strings.Count(seg, "[") != 1 || strings.Count(seg, "]") != 1 {
				p.fail(pos+off+i, "malformed %s path: an index is written name[0]", what)
			}
			digits := seg[i+1 : len(seg)-1]
			n, err := strconv.Atoi(digits)
			if err != nil || strings.ContainsAny(digits, "+-") || n > math.MaxInt32 {
				p.fail(pos+off+i+1, "malformed %s path: the index must be a number from 0 to %d", what, math.MaxInt32)
			}
			index = n
		}
		if name == "" || strings.ContainsAny(name, "()<>@,;:\\\"/?={} \t\r\n") {
			p.fail(pos+off, "malformed %s path: expected a property name at %q", what, seg)
		}
		segs = append(segs, pathSeg{name: name, index: index})
		if end == len(s) {
			return segs
		}
		off = end + 1
	}
}

func (p *parser) call(fn token) *node {
	spec := builtins[strings.ToLower(fn.text)]
	if spec == nil {
		p.fail(fn.pos, "unknown function %s", fn.describe())
	}
	p.enter(fn.pos)
	p.next() // (
	n := &node{op: opCall, typ: spec.ret, pos: fn.pos, fn: spec.id}
	first := p.i
	if p.peek().kind != tRParen {
		for {
			n.kids = append(n.kids, p.parseExpr())
			if p.peek().kind != tComma {
				break
			}
			p.next()
		}
	}
	last := p.i
	if c := p.peek(); c.kind != tRParen {
		p.fail(c.pos, "expected ',' or ')' in the arguments of %s, found %s", spec.name, c.describe())
	}
	p.next()
	p.depth--
	if len(n.kids) < spec.min || (spec.max >= 0 && len(n.kids) > spec.max) {
		p.fail(fn.pos, "%s takes %s, not %d", spec.name, arity(spec), len(n.kids))
	}
	if spec.id == fnTwinChangeIncludes {
		return p.twinChangeIncludes(n, fn, first, last)
	}
	for i, k := range n.kids {
		if a := spec.argKindAt(i); !a.accepts(k.typ) {
			p.fail(k.pos, "argument %d of %s must be %s, not a %s%s", i+1, spec.name, a, k.typ, asNumberHint(a, k.typ))
		}
	}
	return n
}

func arity(b *builtinSpec) string {
	switch {
	case b.max < 0:
		return strconv.Itoa(b.min) + " or more arguments"
	case b.min == b.max && b.min == 1:
		return "1 argument"
	case b.min == b.max:
		return strconv.Itoa(b.min) + " arguments"
	}
	return strconv.Itoa(b.min) + " to " + strconv.Itoa(b.max) + " arguments"
}

func asNumberHint(a argKind, got stype) string {
	if a == argNum && got == sString {
		return " (properties are strings: convert with as_number())"
	}
	return ""
}

// twinChangeIncludes compiles twin_change_includes(path): like edgeHub, the
// argument is the text of its tokens, a path under properties.reported,
// properties.desired or tags of the twin change notification's body.
func (p *parser) twinChangeIncludes(n *node, fn token, first, last int) *node {
	if !p.twinOK {
		p.fail(fn.pos, "twin_change_includes works only in routes FROM /twinChangeNotifications")
	}
	var b strings.Builder
	for _, t := range p.toks[first:last] {
		b.WriteString(t.text)
	}
	arg := b.String()
	pos := p.toks[first].pos
	lower := strings.ToLower(arg)
	if !strings.HasPrefix(lower, "properties.reported.") && !strings.HasPrefix(lower, "properties.desired.") && !strings.HasPrefix(lower, "tags.") {
		p.fail(pos, "twin_change_includes needs a path under properties.reported., properties.desired. or tags., not %q", arg)
	}
	n.path = p.jsonPath(arg, pos, "twin_change_includes")
	n.kids = nil
	return n
}

// binary builds a binary node after checking the operand types that are
// known at parse time, as edgeHub's compiler does: comparing an
// application property (a string) with a number is an error, not a route
// that silently never matches.
func (p *parser) binary(t token, o op, l, r *node) *node {
	n := &node{op: o, pos: t.pos, kids: []*node{l, r}}
	lt, rt := l.typ, r.typ
	bad := func(need string) {
		p.fail(t.pos, "operator %s %s, not %s and %s%s", t.describe(), need, article(lt), article(rt), compareHint(lt, rt))
	}
	switch o {
	case opMul, opDiv, opMod, opAdd, opSub:
		n.typ = sNumber
		if (lt.known() && lt != sNumber) || (rt.known() && rt != sNumber) {
			bad("needs numbers")
		}
	case opConcat:
		n.typ = sString
		if (lt.known() && lt != sString) || (rt.known() && rt != sString) {
			bad("needs strings")
		}
	case opLt, opLe, opGt, opGe:
		n.typ = sBool
		if lt.known() && rt.known() && lt != rt {
			bad("compares values of the same type")
		}
	case opEq, opNe:
		n.typ = sBool
		if lt.known() && rt.known() && lt != rt {
			bad("compares values of the same type")
		}
	case opAnd, opOr:
		n.typ = logicType(lt, rt)
		if (lt.known() && lt != sBool && lt != sNull) || (rt.known() && rt != sBool && rt != sNull) {
			bad("needs bools")
		}
	case opCoalesce:
		switch {
		case lt == sUndef:
			n.typ = rt
		case lt == rt || rt == sUndef:
			n.typ = lt
		default:
			n.typ = sDyn
		}
		if lt.known() && rt.known() && lt != rt {
			bad("needs operands of the same type")
		}
	}
	return n
}

func article(t stype) string {
	switch t {
	case sDyn:
		return "any value"
	case sUndef:
		return "undefined"
	case sNull:
		return "null"
	}
	return "a " + t.String()
}

func compareHint(a, b stype) string {
	if (a == sString && b == sNumber) || (a == sNumber && b == sString) {
		return " (properties are strings: convert with as_number())"
	}
	if a == sNull || b == sNull {
		return " (test with is_null() or is_defined())"
	}
	return ""
}

// unescape decodes \" \' \\ and \uXXXX (the lexer admitted no others);
// a UTF-16 surrogate pair written as two \u escapes becomes one character.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			i++
			continue
		}
		if s[i+1] != 'u' {
			b.WriteByte(s[i+1])
			i += 2
			continue
		}
		r := rune(hex4(s[i+2 : i+6]))
		i += 6
		if utf16.IsSurrogate(r) && i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
			if pair := utf16.DecodeRune(r, rune(hex4(s[i+2:i+6]))); pair != utf8.RuneError {
				r = pair
				i += 6
			}
		}
		b.WriteRune(r) // a lone surrogate becomes U+FFFD
	}
	return b.String()
}

func hex4(s string) uint64 {
	u, _ := strconv.ParseUint(s, 16, 32)
	return u
}
