package route

import (
	"strings"
	"unicode/utf8"
)

// tokKind is a token of edgeHub's GrammarLexer.g4. The order of the
// constants from tLBrace to tUnknown is the lexer's rule order, which breaks
// ties between rules matching the same length.
type tokKind uint8

const (
	tEOF tokKind = iota
	tLBrace
	tRBrace
	tSelect
	tFrom
	tWhere
	tInto
	tString
	tUnterminated
	tInt
	tHex
	tReal
	tTrue
	tFalse
	tNull
	tUndefined
	tLParen
	tRParen
	tComma
	tPlus
	tMinus
	tMul
	tDiv
	tMod
	tAnd
	tOr
	tNot
	tEq
	tNe1
	tNe2
	tLe
	tGe
	tGt
	tLt
	tConcat
	tCoalesce
	tSysProp
	tID
	tQueryPath
	tWS
	tComment
	tUnknown
)

type token struct {
	kind tokKind
	pos  int    // byte offset of the first byte in the text
	text string // the token's text
}

func (t token) end() int { return t.pos + len(t.text) }

// describe names a token for an error message.
func (t token) describe() string {
	if t.kind == tEOF {
		return "the end of the text"
	}
	s := t.text
	if utf8.RuneCountInString(s) > 40 {
		n := 0
		for i := range s {
			if n == 37 {
				s = s[:i] + "..."
				break
			}
			n++
		}
	}
	return "'" + s + "'"
}

// Punctuation and operators of fixed text, in rule order.
var fixedTokens = []struct {
	text string
	kind tokKind
}{
	{"{", tLBrace}, {"}", tRBrace},
	{"(", tLParen}, {")", tRParen}, {",", tComma}, {"+", tPlus}, {"-", tMinus},
	{"*", tMul}, {"/", tDiv}, {"%", tMod},
	{"=", tEq}, {"!=", tNe1}, {"<>", tNe2}, {"<=", tLe}, {">=", tGe}, {">", tGt},
	{"<", tLt}, {"||", tConcat}, {"??", tCoalesce},
}

// lex splits text into tokens the way edgeHub's ANTLR lexer does: at each
// position every rule is tried, the longest match wins and a tie goes to
// the rule defined first. That is why "a-b" and "x*2" are single names
// (identifiers may contain - * + % ! | and more) while "a - b" is a
// subtraction, and why "true" is a literal but "True" a property name.
// Whitespace is dropped and /* comments */ are returned apart. The text
// must be valid UTF-8.
func lex(text string) (toks, comments []token) {
	// A comment can only start before the last "*/"; knowing where that is
	// keeps a text full of unclosed "/*" from taking quadratic time.
	lastClose := strings.LastIndex(text, "*/")
	for i := 0; i < len(text); {
		kind, n := longestMatch(text, i, lastClose)
		switch kind {
		case tWS:
		case tComment:
			comments = append(comments, token{kind: kind, pos: i, text: text[i : i+n]})
		default:
			toks = append(toks, token{kind: kind, pos: i, text: text[i : i+n]})
		}
		i += n
	}
	return append(toks, token{kind: tEOF, pos: len(text)}), comments
}

func longestMatch(s string, i, lastClose int) (tokKind, int) {
	best, bestLen := tUnknown, 0
	try := func(k tokKind, n int) {
		if n > bestLen {
			best, bestLen = k, n
		}
	}
	// Rules in the order of GrammarLexer.g4 (the parser's implicit '{' and
	// '}' first); only strictly longer matches replace an earlier one.
	switch s[i] {
	case '{':
		try(tLBrace, 1)
	case '}':
		try(tRBrace, 1)
	}
	try(tSelect, keyword(s, i, "select"))
	try(tFrom, keyword(s, i, "from"))
	try(tWhere, keyword(s, i, "where"))
	try(tInto, keyword(s, i, "into"))
	str, unterminated := stringLen(s, i)
	try(tString, str)
	try(tUnterminated, unterminated)
	try(tInt, intLen(s, i))
	try(tHex, hexLen(s, i))
	try(tReal, realLen(s, i))
	try(tTrue, exact(s, i, "true"))
	try(tFalse, exact(s, i, "false"))
	try(tNull, exact(s, i, "null"))
	try(tUndefined, exact(s, i, "undefined"))
	for _, f := range fixedTokens[2:10] { // ( ) , + - * / %
		try(f.kind, exact(s, i, f.text))
	}
	try(tAnd, keyword(s, i, "and"))
	try(tOr, keyword(s, i, "or"))
	try(tNot, keyword(s, i, "not"))
	for _, f := range fixedTokens[10:] { // = != <> <= >= > < || ??
		try(f.kind, exact(s, i, f.text))
	}
	if s[i] == '$' {
		if n := runLen(s, i+1, isQueryPathChar); n > 0 {
			try(tSysProp, 1+n)
		}
	}
	try(tID, runLen(s, i, isIDChar))
	try(tQueryPath, runLen(s, i, isQueryPathChar))
	try(tWS, wsLen(s, i))
	if i+2 <= lastClose {
		try(tComment, commentLen(s, i))
	}
	if bestLen == 0 {
		_, n := utf8.DecodeRuneInString(s[i:])
		return tUnknown, n
	}
	return best, bestLen
}

// keyword matches an ASCII word case-insensitively (word is lowercase).
func keyword(s string, i int, word string) int {
	if len(s)-i < len(word) {
		return 0
	}
	for j := 0; j < len(word); j++ {
		c := s[i+j]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != word[j] {
			return 0
		}
	}
	return len(word)
}

func exact(s string, i int, word string) int {
	if len(s)-i >= len(word) && s[i:i+len(word)] == word {
		return len(word)
	}
	return 0
}

// stringLen returns the length of a STRING token at i (0 if none) and of an
// UNTERMINATED_STRING: a quote followed by escapes and characters other than
// that quote and backslash, up to the end of the text or a backslash that
// starts no valid escape.
func stringLen(s string, i int) (terminated, unterminated int) {
	q := s[i]
	if q != '"' && q != '\'' {
		return 0, 0
	}
	j := i + 1
	for j < len(s) {
		switch c := s[j]; {
		case c == q:
			return j + 1 - i, j - i
		case c == '\\':
			n := escapeLen(s, j)
			if n == 0 {
				return 0, j - i
			}
			j += n
		default:
			j++
		}
	}
	return 0, j - i
}

// escapeLen returns the length of the escape sequence at s[j] == '\\':
// \" \' \\ or \uXXXX; 0 if it is none of those.
func escapeLen(s string, j int) int {
	if j+1 >= len(s) {
		return 0
	}
	switch s[j+1] {
	case '"', '\'', '\\':
		return 2
	case 'u':
		if j+6 <= len(s) && isHex(s[j+2]) && isHex(s[j+3]) && isHex(s[j+4]) && isHex(s[j+5]) {
			return 6
		}
	}
	return 0
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func digits(s string, j int) int {
	n := 0
	for j+n < len(s) && isDigit(s[j+n]) {
		n++
	}
	return n
}

// intLen: '-'? [0-9]+
func intLen(s string, i int) int {
	j := i
	if s[j] == '-' {
		j++
	}
	n := digits(s, j)
	if n == 0 {
		return 0
	}
	return j + n - i
}

// hexLen: '0' [Xx] [0-9a-fA-F]+
func hexLen(s string, i int) int {
	if len(s)-i < 3 || s[i] != '0' || (s[i+1] != 'x' && s[i+1] != 'X') {
		return 0
	}
	j := i + 2
	for j < len(s) && isHex(s[j]) {
		j++
	}
	if j == i+2 {
		return 0
	}
	return j - i
}

// realLen: '-'? [0-9]* '.' [0-9]+ EXP? | '-'? [0-9]* EXP, EXP: [Ee] [+-]? [0-9]+
func realLen(s string, i int) int {
	j := i
	if s[j] == '-' {
		j++
	}
	j += digits(s, j)
	best := 0
	if j < len(s) && s[j] == '.' {
		if n := digits(s, j+1); n > 0 {
			k := j + 1 + n
			best = k - i
			if e := expLen(s, k); e > 0 {
				best = k + e - i
			}
		}
	}
	if e := expLen(s, j); e > 0 && j+e-i > best {
		best = j + e - i
	}
	return best
}

func expLen(s string, j int) int {
	if j >= len(s) || (s[j] != 'e' && s[j] != 'E') {
		return 0
	}
	k := j + 1
	if k < len(s) && (s[k] == '+' || s[k] == '-') {
		k++
	}
	n := digits(s, k)
	if n == 0 {
		return 0
	}
	return k + n - j
}

func wsLen(s string, i int) int {
	j := i
	for j < len(s) && (s[j] == ' ' || s[j] == '\t' || s[j] == '\r' || s[j] == '\n') {
		j++
	}
	return j - i
}

// commentLen: '/*' .*? '*/'
func commentLen(s string, i int) int {
	if len(s)-i < 4 || s[i] != '/' || s[i+1] != '*' {
		return 0
	}
	for j := i + 2; j+1 < len(s); j++ {
		if s[j] == '*' && s[j+1] == '/' {
			return j + 2 - i
		}
	}
	return 0
}

// runLen returns the byte length of the longest run of runes at s[i:] for
// which ok holds.
func runLen(s string, i int, ok func(rune) bool) int {
	j := i
	for j < len(s) {
		r, n := utf8.DecodeRuneInString(s[j:])
		if !ok(r) {
			break
		}
		j += n
	}
	return j - i
}

// isQueryPathChar: ~[()<>@,;:\\"/?={} \t\n\r]
func isQueryPathChar(r rune) bool {
	switch r {
	case '(', ')', '<', '>', '@', ',', ';', ':', '\\', '"', '/', '?', '=', '{', '}', ' ', '\t', '\n', '\r':
		return false
	}
	return true
}

// isIDChar: as isQueryPathChar, also excluding [ and ].
func isIDChar(r rune) bool {
	return r != '[' && r != ']' && isQueryPathChar(r)
}
