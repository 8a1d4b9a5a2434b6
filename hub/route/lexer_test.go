package route

import (
	"errors"
	"strings"
	"testing"
)

// The lexer reproduces edgeHub's ANTLR longest-match rules, quirks
// included: a name may contain - * + % ! | and ', so operators next to a
// name belong to it.
func TestLex(t *testing.T) {
	tests := []struct {
		in   string
		want string // kind:text, space-separated
	}{
		{"a - b", "ID:a MINUS:- ID:b"},
		{"a-b", "ID:a-b"},
		{"x*2", "ID:x*2"},
		{"x * 2", "ID:x MUL:* INT:2"},
		{"x -1", "ID:x INT:-1"},
		{"- 1", "MINUS:- INT:1"},
		{"+5", "ID:+5"},
		{"true True TRUE", "TRUE:true ID:True ID:TRUE"},
		{"null undefined false", "NULL:null UNDEFINED:undefined FALSE:false"},
		{"and AND And andy", "AND:and AND:AND AND:And ID:andy"},
		{"or not NOT(x)", "OR:or NOT:not NOT:NOT LPAREN:( ID:x RPAREN:)"},
		{"select FROM Where into", "SELECT:select FROM:FROM WHERE:Where INTO:into"},
		{"fromage", "ID:fromage"},
		{"12 1.5 .5 -.5e-3 2E3", "INT:12 REAL:1.5 REAL:.5 REAL:-.5e-3 REAL:2E3"},
		{"e5", "REAL:e5"},
		{"1.", "ID:1."},
		{"1e", "ID:1e"},
		{"1.5.3", "ID:1.5.3"},
		{"0x1F 0X0a", "HEX:0x1F HEX:0X0a"},
		{"0x1G 0x", "ID:0x1G ID:0x"},
		{"'a' \"b\"", "STRING:'a' STRING:\"b\""},
		{`'it\'s'`, `STRING:'it\'s'`},
		{"'abc'def", "ID:'abc'def"},
		{"it's", "ID:it's"},
		{"'abc", "UNTERM:'abc"},
		{`"a\n"`, `UNTERM:"a UNKNOWN:\ ID:n UNTERM:"`},
		{`'\u004'`, `UNTERM:' UNKNOWN:\ ID:u004'`},
		{"$body.a[0].b", "SYSPROP:$body.a[0].b"},
		{"$a-b $", "SYSPROP:$a-b ID:$"},
		{"abc[0]", "QUERYPATH:abc[0]"},
		{"{$x}", "LBRACE:{ SYSPROP:$x RBRACE:}"},
		{"a /* c */ b", "ID:a ID:b"},
		{"/**/x", "ID:x"},
		{"/*/ x", "DIV:/ MUL:* DIV:/ ID:x"},
		{"/messages/*", "DIV:/ ID:messages DIV:/ MUL:*"},
		{"a||b a || b", "ID:a||b ID:a CONCAT:|| ID:b"},
		{"a??b", "ID:a COALESCE:?? ID:b"},
		{"!= <> <= >= < > = !x", "NE:!= NE:<> LE:<= GE:>= LT:< GT:> EQ:= ID:!x"},
		{"@ ; :", "UNKNOWN:@ UNKNOWN:; UNKNOWN:: "},
		{"é=ü", "ID:é EQ:= ID:ü"},
		{"f(a, b)", "ID:f LPAREN:( ID:a COMMA:, ID:b RPAREN:)"},
	}
	for _, tt := range tests {
		toks, _ := lex(tt.in)
		var got []string
		for _, tok := range toks[:len(toks)-1] {
			got = append(got, kindName[tok.kind]+":"+tok.text)
			if tt.in[tok.pos:tok.end()] != tok.text {
				t.Errorf("%q: token %q at %d does not match the text", tt.in, tok.text, tok.pos)
			}
		}
		if g, w := strings.Join(got, " "), strings.TrimSpace(tt.want); g != w {
			t.Errorf("lex(%q)\n got %s\nwant %s", tt.in, g, w)
		}
	}
}

var kindName = map[tokKind]string{
	tLBrace: "LBRACE", tRBrace: "RBRACE", tSelect: "SELECT", tFrom: "FROM", tWhere: "WHERE", tInto: "INTO",
	tString: "STRING", tUnterminated: "UNTERM", tInt: "INT", tHex: "HEX", tReal: "REAL",
	tTrue: "TRUE", tFalse: "FALSE", tNull: "NULL", tUndefined: "UNDEFINED",
	tLParen: "LPAREN", tRParen: "RPAREN", tComma: "COMMA", tPlus: "PLUS", tMinus: "MINUS",
	tMul: "MUL", tDiv: "DIV", tMod: "MOD", tAnd: "AND", tOr: "OR", tNot: "NOT",
	tEq: "EQ", tNe1: "NE", tNe2: "NE", tLe: "LE", tGe: "GE", tGt: "GT", tLt: "LT",
	tConcat: "CONCAT", tCoalesce: "COALESCE", tSysProp: "SYSPROP", tID: "ID", tQueryPath: "QUERYPATH",
	tUnknown: "UNKNOWN",
}

// Big hostile texts parse to the right answer; the lexer's work is linear
// (without the guard on unclosed "/*", the first case alone takes seconds).
func TestParseBigTexts(t *testing.T) {
	tests := []struct {
		text string
		pos  int // -1: parses
		msg  string
	}{
		{strings.Repeat("/* ", 100000), 0, "expected FROM, found '/'"},
		{strings.Repeat("/* ", 100000) + "*/", 0, "empty route"},
		{strings.Repeat("/*", 1000), 5, "expected FROM, found '*'"}, // "/*/*/" is a comment
		{strings.Repeat("'a", 100000), 0, "expected FROM"},
		{strings.Repeat("a", 200000), 0, "expected FROM"},
		{"FROM /messages WHERE " + strings.Repeat("x = 'a' AND ", 20000) + "true INTO $upstream", -1, ""},
	}
	for _, tt := range tests {
		_, err := Parse("big", tt.text)
		var pe *ParseError
		switch {
		case tt.pos < 0 && err != nil:
			t.Errorf("%.20q...: %v", tt.text, err)
		case tt.pos >= 0 && (!errors.As(err, &pe) || pe.Pos != tt.pos || !strings.Contains(pe.Msg, tt.msg)):
			t.Errorf("%.20q...: got %v, want at offset %d: %s", tt.text, err, tt.pos, tt.msg)
		}
	}
}
