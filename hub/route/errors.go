package route

import (
	"fmt"
	"strconv"
)

// ParseError is a route or condition that does not parse: Pos is the byte
// offset (0-based) in the text where the problem is. Parse, ParseCondition
// and NewTable return it (NewTable wraps it in a fault.Invalid error).
type ParseError struct {
	Name string // route name; "" for ParseCondition
	Pos  int    // byte offset in the text, 0 <= Pos <= len(text)
	Msg  string
}

func (e *ParseError) Error() string {
	if e.Name == "" {
		return "at offset " + strconv.Itoa(e.Pos) + ": " + e.Msg
	}
	return fmt.Sprintf("route %q: at offset %d: %s", e.Name, e.Pos, e.Msg)
}

// bail carries a *ParseError out of the recursive descent to the entry
// point, which recovers it.
type bail struct{ err *ParseError }

func (p *parser) fail(pos int, format string, args ...any) {
	panic(bail{&ParseError{Name: p.name, Pos: pos, Msg: fmt.Sprintf(format, args...)}})
}

// catch turns a bail into *err; other panics propagate.
func catch(err **ParseError) {
	if r := recover(); r != nil {
		b, ok := r.(bail)
		if !ok {
			panic(r)
		}
		*err = b.err
	}
}
