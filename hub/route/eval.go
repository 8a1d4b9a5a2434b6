package route

import (
	"math"
)

// evalCtx is one evaluation of conditions against one message; it caches
// the decoded JSON body for the $body queries of every route.
type evalCtx struct {
	m    *Message
	body jsonDoc // for $body: only with a JSON content type and encoding
	twin jsonDoc // for twin_change_includes: the body, whatever its type
}

var emptyMessage Message

func (n *node) eval(c *evalCtx) Value {
	switch n.op {
	case opLit:
		return n.val
	case opApp:
		if v, ok := lookupFold(c.m.App, n.name); ok {
			return String(v)
		}
		return Value{}
	case opSys:
		if v, ok := lookupFold(c.m.App, n.name); ok {
			return String(v)
		}
		fallthrough
	case opSysOnly:
		if v, ok := lookupFold(c.m.Sys, n.sys); ok {
			return String(v)
		}
		return Value{}
	case opBody:
		if n.appFirst {
			if v, ok := lookupFold(c.m.App, n.name); ok {
				return String(v)
			}
		}
		return c.bodyQuery(n.path)
	case opDoc:
		return c.docQuery(n.path)
	case opNeg:
		x := n.kids[0].eval(c)
		if x.kind != KindNumber {
			return Value{}
		}
		return Number(-x.n)
	case opNot:
		switch x := n.kids[0].eval(c); x.kind {
		case KindBool:
			return Bool(!x.b)
		case KindNull:
			return Bool(true) // edgeHub: NOT null is true
		}
		return Value{}
	case opMul, opDiv, opMod, opAdd, opSub:
		l, r := n.kids[0].eval(c), n.kids[1].eval(c)
		if l.kind != KindNumber || r.kind != KindNumber {
			return Value{}
		}
		switch n.op {
		case opMul:
			return Number(l.n * r.n)
		case opDiv:
			return Number(l.n / r.n)
		case opMod:
			return Number(math.Mod(l.n, r.n))
		case opAdd:
			return Number(l.n + r.n)
		}
		return Number(l.n - r.n)
	case opConcat:
		l, r := n.kids[0].eval(c), n.kids[1].eval(c)
		if l.kind != KindString || r.kind != KindString {
			return Value{}
		}
		return String(l.s + r.s)
	case opLt, opLe, opGt, opGe, opEq, opNe:
		return compare(n.op, n.kids[0].eval(c), n.kids[1].eval(c))
	case opAnd:
		return and(n.kids[0].eval(c), n.kids[1].eval(c))
	case opOr:
		return or(n.kids[0].eval(c), n.kids[1].eval(c))
	case opCoalesce:
		if l := n.kids[0].eval(c); l.kind != KindUndefined {
			return l
		}
		return n.kids[1].eval(c)
	case opCall:
		if n.fn == fnTwinChangeIncludes {
			return c.twinChangeIncludes(n.path)
		}
		return call(n.fn, n, c)
	}
	return Value{}
}

// compare: operands of different kinds, or an undefined one, give
// undefined. Strings compare ordinally (case-sensitive); numbers as .NET's
// double.CompareTo does, so NaN equals NaN and sorts below every number;
// false sorts before true; null equals null.
func compare(o op, l, r Value) Value {
	if l.kind != r.kind || l.kind == KindUndefined {
		return Value{}
	}
	var c int
	switch l.kind {
	case KindBool:
		switch {
		case l.b == r.b:
		case r.b:
			c = -1
		default:
			c = 1
		}
	case KindNumber:
		switch ln, rn := math.IsNaN(l.n), math.IsNaN(r.n); {
		case ln || rn:
			if !ln {
				c = 1
			} else if !rn {
				c = -1
			}
		case l.n < r.n:
			c = -1
		case l.n > r.n:
			c = 1
		}
	case KindString:
		switch {
		case l.s < r.s:
			c = -1
		case l.s > r.s:
			c = 1
		}
	}
	switch o {
	case opLt:
		return Bool(c < 0)
	case opLe:
		return Bool(c <= 0)
	case opGt:
		return Bool(c > 0)
	case opGe:
		return Bool(c >= 0)
	case opEq:
		return Bool(c == 0)
	}
	return Bool(c != 0)
}

// Three-valued logic: false, true and unknown (undefined, or a value that
// is not a bool). Null follows edgeHub: null AND x is null, null OR x is x.
const (
	lFalse = iota
	lTrue
	lUnknown
	lNull
)

func logic(v Value) int {
	switch v.kind {
	case KindBool:
		if v.b {
			return lTrue
		}
		return lFalse
	case KindNull:
		return lNull
	}
	return lUnknown
}

func fromLogic(l int) Value {
	switch l {
	case lFalse:
		return Bool(false)
	case lTrue:
		return Bool(true)
	case lNull:
		return Null()
	}
	return Value{}
}

func and(l, r Value) Value {
	a, b := logic(l), logic(r)
	switch {
	case a == lNull || b == lNull:
		return Null()
	case a == lFalse || b == lFalse:
		return Bool(false)
	case a == lTrue && b == lTrue:
		return Bool(true)
	}
	return Value{}
}

func or(l, r Value) Value {
	a, b := logic(l), logic(r)
	switch {
	case a == lNull:
		return fromLogic(b)
	case b == lNull:
		return fromLogic(a)
	case a == lTrue || b == lTrue:
		return Bool(true)
	case a == lFalse && b == lFalse:
		return Bool(false)
	}
	return Value{}
}
