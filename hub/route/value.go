package route

import (
	"strconv"
	"strings"
)

// Kind is the type of a Value.
type Kind uint8

// The kinds of values a condition computes with. Undefined is what a missing
// property, a failed conversion or an operation on mismatched types gives.
const (
	KindUndefined Kind = iota
	KindNull
	KindBool
	KindNumber
	KindString
)

func (k Kind) String() string {
	switch k {
	case KindNull:
		return "null"
	case KindBool:
		return "bool"
	case KindNumber:
		return "number"
	case KindString:
		return "string"
	}
	return "undefined"
}

// Value is the result of evaluating a condition or part of one: a tagged
// union of undefined, null, bool, number (float64) and string. The zero Value
// is undefined. Values are comparable with == (except NaN numbers).
type Value struct {
	kind Kind
	b    bool
	n    float64
	s    string
}

// Undefined returns the undefined value.
func Undefined() Value { return Value{} }

// Null returns the null value.
func Null() Value { return Value{kind: KindNull} }

// Bool returns a bool value.
func Bool(b bool) Value { return Value{kind: KindBool, b: b} }

// Number returns a number value.
func Number(n float64) Value { return Value{kind: KindNumber, n: n} }

// String returns a string value.
func String(s string) Value { return Value{kind: KindString, s: s} }

// Kind returns the value's kind.
func (v Value) Kind() Kind { return v.kind }

// Bool returns the value of a bool (false for other kinds).
func (v Value) Bool() bool { return v.kind == KindBool && v.b }

// Number returns the value of a number (0 for other kinds).
func (v Value) Number() float64 {
	if v.kind != KindNumber {
		return 0
	}
	return v.n
}

// Text returns the value of a string ("" for other kinds).
func (v Value) Text() string {
	if v.kind != KindString {
		return ""
	}
	return v.s
}

// IsTrue reports whether v is the bool true: the only value that routes.
func (v Value) IsTrue() bool { return v.kind == KindBool && v.b }

// String renders the value as a literal of the route language.
func (v Value) String() string {
	switch v.kind {
	case KindNull:
		return "null"
	case KindBool:
		return strconv.FormatBool(v.b)
	case KindNumber:
		return strconv.FormatFloat(v.n, 'g', -1, 64)
	case KindString:
		return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v.s) + "'"
	}
	return "undefined"
}
