package route

import (
	"math"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

type fnID uint8

const (
	fnAbs fnID = iota
	fnExp
	fnPower
	fnSquare
	fnCeiling
	fnFloor
	fnSign
	fnSqrt
	fnAsNumber
	fnIsBool
	fnIsDefined
	fnIsNull
	fnIsNumber
	fnIsString
	fnConcat
	fnLength
	fnLower
	fnUpper
	fnSubstring
	fnIndexOf
	fnStartsWith
	fnEndsWith
	fnContains
	fnTwinChangeIncludes
)

// argKind is what a built-in accepts for an argument at parse time.
type argKind uint8

const (
	argAny argKind = iota
	argNum
	argStr
	argStrNum
)

func (a argKind) accepts(t stype) bool {
	if !t.known() {
		return true
	}
	switch a {
	case argNum:
		return t == sNumber
	case argStr:
		return t == sString
	case argStrNum:
		return t == sString || t == sNumber
	}
	return true
}

func (a argKind) String() string {
	switch a {
	case argNum:
		return "a number"
	case argStr:
		return "a string"
	case argStrNum:
		return "a string or a number"
	}
	return "any value"
}

type builtinSpec struct {
	id       fnID
	name     string
	min, max int // argument counts; max -1: any number
	args     []argKind
	ret      stype
}

// argKindAt returns the kind of argument i (the last one repeats).
func (b *builtinSpec) argKindAt(i int) argKind {
	if i < len(b.args) {
		return b.args[i]
	}
	return b.args[len(b.args)-1]
}

var (
	num1 = []argKind{argNum}
	str1 = []argKind{argStr}
	str2 = []argKind{argStr, argStr}
	any1 = []argKind{argAny}
)

// builtins are edgeHub's built-in functions, by lowercase name (names are
// case-insensitive).
var builtins = map[string]*builtinSpec{
	"abs":                  {fnAbs, "abs", 1, 1, num1, sNumber},
	"exp":                  {fnExp, "exp", 1, 1, num1, sNumber},
	"power":                {fnPower, "power", 2, 2, []argKind{argNum, argNum}, sNumber},
	"square":               {fnSquare, "square", 1, 1, num1, sNumber},
	"ceiling":              {fnCeiling, "ceiling", 1, 1, num1, sNumber},
	"floor":                {fnFloor, "floor", 1, 1, num1, sNumber},
	"sign":                 {fnSign, "sign", 1, 1, num1, sNumber},
	"sqrt":                 {fnSqrt, "sqrt", 1, 1, num1, sNumber},
	"as_number":            {fnAsNumber, "as_number", 1, 1, []argKind{argStrNum}, sNumber},
	"is_bool":              {fnIsBool, "is_bool", 1, 1, any1, sBool},
	"is_defined":           {fnIsDefined, "is_defined", 1, 1, any1, sBool},
	"is_null":              {fnIsNull, "is_null", 1, 1, any1, sBool},
	"is_number":            {fnIsNumber, "is_number", 1, 1, any1, sBool},
	"is_string":            {fnIsString, "is_string", 1, 1, any1, sBool},
	"concat":               {fnConcat, "concat", 1, -1, str1, sString},
	"length":               {fnLength, "length", 1, 1, str1, sNumber},
	"lower":                {fnLower, "lower", 1, 1, str1, sString},
	"upper":                {fnUpper, "upper", 1, 1, str1, sString},
	"substring":            {fnSubstring, "substring", 2, 3, []argKind{argStr, argNum, argNum}, sString},
	"index_of":             {fnIndexOf, "index_of", 2, 2, str2, sNumber},
	"starts_with":          {fnStartsWith, "starts_with", 2, 2, str2, sBool},
	"ends_with":            {fnEndsWith, "ends_with", 2, 2, str2, sBool},
	"contains":             {fnContains, "contains", 2, 2, str2, sBool},
	"twin_change_includes": {fnTwinChangeIncludes, "twin_change_includes", 1, 1, any1, sBool},
}

// call evaluates a built-in (other than twin_change_includes) on evaluated
// arguments. An argument of the wrong kind, or a failure (an index out of
// range, the sign of NaN), gives undefined.
func call(id fnID, n *node, c *evalCtx) Value {
	if id == fnConcat {
		var b strings.Builder
		for _, k := range n.kids {
			v := k.eval(c)
			if v.kind != KindString {
				return Value{}
			}
			b.WriteString(v.s)
		}
		return String(b.String())
	}
	a := n.kids[0].eval(c)
	switch id {
	case fnIsBool:
		return Bool(a.kind == KindBool)
	case fnIsDefined:
		return Bool(a.kind != KindUndefined)
	case fnIsNull:
		return Bool(a.kind == KindNull)
	case fnIsNumber:
		return Bool(a.kind == KindNumber)
	case fnIsString:
		return Bool(a.kind == KindString)
	case fnAsNumber:
		switch a.kind {
		case KindNumber:
			return a
		case KindString:
			if f, ok := parseNumber(a.s); ok {
				return Number(f)
			}
		}
		return Value{}
	}
	switch id {
	case fnAbs, fnExp, fnSquare, fnCeiling, fnFloor, fnSign, fnSqrt, fnPower:
		if a.kind != KindNumber {
			return Value{}
		}
		x := a.n
		switch id {
		case fnAbs:
			return Number(math.Abs(x))
		case fnExp:
			return Number(math.Exp(x))
		case fnSquare:
			return Number(x * x)
		case fnCeiling:
			return Number(math.Ceil(x))
		case fnFloor:
			return Number(math.Floor(x))
		case fnSqrt:
			return Number(math.Sqrt(x))
		case fnSign:
			switch {
			case math.IsNaN(x):
				return Value{}
			case x > 0:
				return Number(1)
			case x < 0:
				return Number(-1)
			}
			return Number(0)
		case fnPower:
			y := n.kids[1].eval(c)
			if y.kind != KindNumber {
				return Value{}
			}
			return Number(math.Pow(x, y.n))
		}
	}
	// String functions.
	if a.kind != KindString {
		return Value{}
	}
	s := a.s
	switch id {
	case fnLength:
		return Number(float64(utf16Len(s)))
	case fnLower:
		return String(strings.ToLower(s))
	case fnUpper:
		return String(strings.ToUpper(s))
	case fnSubstring:
		return substring(s, n, c)
	}
	b := n.kids[1].eval(c)
	if b.kind != KindString {
		return Value{}
	}
	switch id {
	case fnIndexOf:
		i := strings.Index(s, b.s)
		if i < 0 {
			return Number(-1)
		}
		return Number(float64(utf16Len(s[:i])))
	case fnStartsWith:
		return Bool(strings.HasPrefix(s, b.s))
	case fnEndsWith:
		return Bool(strings.HasSuffix(s, b.s))
	case fnContains:
		return Bool(strings.Contains(s, b.s))
	}
	return Value{}
}

// substring(s, start[, length]) counts UTF-16 code units, like the .NET
// String.Substring edgeHub calls; indexes are truncated to integers and
// out-of-range ones give undefined.
func substring(s string, n *node, c *evalCtx) Value {
	start := n.kids[1].eval(c)
	if start.kind != KindNumber {
		return Value{}
	}
	units := utf16.Encode([]rune(s))
	from, ok := toIndex(start.n)
	if !ok || from > len(units) {
		return Value{}
	}
	to := len(units)
	if len(n.kids) == 3 {
		l := n.kids[2].eval(c)
		if l.kind != KindNumber {
			return Value{}
		}
		m, ok := toIndex(l.n)
		if !ok || m > len(units)-from {
			return Value{}
		}
		to = from + m
	}
	return String(string(utf16.Decode(units[from:to])))
}

func toIndex(f float64) (int, bool) {
	if math.IsNaN(f) || f < 0 || f >= math.MaxInt32 {
		return 0, false
	}
	return int(f), true
}

// utf16Len is the length of s in UTF-16 code units (.NET string length).
func utf16Len(s string) int {
	n := 0
	for _, r := range s {
		if r >= 0x10000 && r <= utf8.MaxRune {
			n += 2
		} else {
			n++
		}
	}
	return n
}

// parseNumber reads a decimal number with optional surrounding whitespace,
// sign, fraction and exponent (as_number on a string). Hexadecimal, digit
// separators, "Inf" and "NaN" are not numbers.
func parseNumber(s string) (float64, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false
	}
	digitsSeen := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isDigit(c):
			digitsSeen = true
		case c == '.' || c == '+' || c == '-' || c == 'e' || c == 'E':
		default:
			return 0, false
		}
	}
	if !digitsSeen {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return f, true // ±Inf, as .NET parses an overflowing number
		}
		return 0, false
	}
	return f, true
}
