package route

import (
	"time"
)

// DefaultPriority is the priority of a route that sets none: lower than
// every explicit priority (0 is the highest, 9 the lowest), like edgeHub's
// 2000000000.
const DefaultPriority = 2000000000

// Route is a parsed route.
type Route struct {
	Name string
	Text string
	// Source is the normalised prefix a message source must start with
	// (case-insensitively): the FROM path without a trailing "*" and with
	// one trailing "/", e.g. "/messages/modules/cam/" or "/" for FROM /*.
	Source   string
	Sink     Sink
	Priority int           // 0 (highest) .. 9, or DefaultPriority
	TTL      time.Duration // 0: the global store-and-forward TTL

	srcCmp string     // Source without its trailing '/'
	cond   *Condition // nil: no WHERE
	names  []string   // []string{Name}, shared by single-route deliveries
}

// Parse parses a route with DefaultPriority and no TTL of its own. Errors
// are *ParseError, naming the route and the byte offset in text.
func Parse(name, text string) (*Route, error) {
	r := &Route{Name: name, Text: text, Priority: DefaultPriority}
	if err := parseRoute(r); err != nil {
		return nil, err
	}
	r.names = []string{name}
	return r, nil
}

// Condition returns the route's WHERE condition, nil when it has none.
func (r *Route) Condition() *Condition { return r.cond }

// Matches reports whether m comes from the route's source and its condition
// (if any) evaluates to true.
func (r *Route) Matches(m *Message) bool {
	if m == nil {
		m = &emptyMessage
	}
	if !matchSource(r.srcCmp, m.Source) {
		return false
	}
	if r.cond == nil {
		return true
	}
	c := evalCtx{m: m}
	return r.cond.root.eval(&c).IsTrue()
}

// Condition is a compiled WHERE condition.
type Condition struct {
	text string
	root *node
}

// ParseCondition parses a condition on its own (the text after WHERE): any
// expression of the language, which Eval computes. twin_change_includes is
// allowed, evaluated over the message body. Errors are *ParseError with the
// byte offset in text. (A route's WHERE must moreover not be a plain string
// or number, which would never route.)
func ParseCondition(text string) (cond *Condition, err error) {
	var perr *ParseError
	func() {
		defer catch(&perr)
		p := &parser{text: text, twinOK: true}
		p.checkText()
		p.toks, _ = lex(text)
		if t := p.peek(); t.kind == tEOF {
			p.fail(0, "empty condition")
		}
		root := p.parseExpr()
		if t := p.peek(); t.kind != tEOF {
			p.fail(t.pos, "expected an operator or the end of the condition, found %s%s", t.describe(), hint(t))
		}
		cond = &Condition{text: text, root: root}
	}()
	if perr != nil {
		return nil, perr
	}
	return cond, nil
}

// ParseTwinQuery parses a condition over a device document, as IoT Hub's
// target conditions read a twin: a bare name is a JSON path into the
// document (tags.site, properties.reported.lastDesiredStatus.code,
// deviceId), with its JSON type (a number compares as a number), instead
// of an application property. Everything else is the route language:
// operators, three-valued logic, built-ins. Evaluate it with [Condition.EvalDoc].
func ParseTwinQuery(text string) (cond *Condition, err error) {
	var perr *ParseError
	func() {
		defer catch(&perr)
		p := &parser{text: text, docNames: true}
		p.checkText()
		p.toks, _ = lex(text)
		if t := p.peek(); t.kind == tEOF {
			p.fail(0, "empty condition")
		}
		root := p.parseExpr()
		if t := p.peek(); t.kind != tEOF {
			p.fail(t.pos, "expected an operator or the end of the condition, found %s%s", t.describe(), hint(t))
		}
		cond = &Condition{text: text, root: root}
	}()
	if perr != nil {
		return nil, perr
	}
	return cond, nil
}

// EvalDoc evaluates a twin query against a JSON document (an object).
func (c *Condition) EvalDoc(doc []byte) Value {
	return c.Eval(&Message{Body: doc})
}

// Eval evaluates the condition against m. Only the bool true routes.
func (c *Condition) Eval(m *Message) Value {
	if m == nil {
		m = &emptyMessage
	}
	ctx := evalCtx{m: m}
	return c.root.eval(&ctx)
}

// String returns the condition's text.
func (c *Condition) String() string { return c.text }
