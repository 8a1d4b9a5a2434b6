package manifest

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// parseJSONNet parses JSON text the way Json.NET's JsonTextReader reads
// it with default settings, which is how edgeAgent reads createOptions:
// `//` and `/* */` comments, trailing commas in objects and arrays,
// 'single-quoted' strings, unquoted property names and raw control
// characters in strings are accepted; anything after the value but
// space and comments is an error. Duplicate keys are kept, in order (the
// last one wins when the value is decoded).
//
// The nodes' Column is the byte offset of the value in text plus one
// (Line is always 1): callers say "at character N of the createOptions
// value". The error is a message and that offset.
func parseJSONNet(text string, budget *int) (*yaml.Node, int, string) {
	p := &jnParser{s: text, budget: budget}
	p.space()
	if p.err != "" {
		return nil, p.errAt, p.err
	}
	if p.i >= len(p.s) {
		return nil, p.i, "empty"
	}
	v := p.value(0)
	if p.err != "" {
		return nil, p.errAt, p.err
	}
	p.space()
	if p.err != "" {
		return nil, p.errAt, p.err
	}
	if p.i < len(p.s) {
		return nil, p.i, fmt.Sprintf("unexpected %s after the end of the JSON value", p.describe())
	}
	return v, 0, ""
}

type jnParser struct {
	s     string
	i     int
	err   string
	errAt int
	// budget is how many more values may be read (shared by all the
	// createOptions of a manifest); nil for no bound.
	budget *int
}

func (p *jnParser) fail(at int, format string, args ...any) *yaml.Node {
	if p.err == "" {
		p.err, p.errAt = fmt.Sprintf(format, args...), at
	}
	return nil
}

func (p *jnParser) describe() string {
	if p.i >= len(p.s) {
		return "end of text"
	}
	r, _ := utf8.DecodeRuneInString(p.s[p.i:])
	return fmt.Sprintf("character %q", r)
}

func (p *jnParser) node(kind yaml.Kind, tag, value string, at int) *yaml.Node {
	n := &yaml.Node{Kind: kind, Tag: tag, Value: value, Line: 1, Column: at + 1}
	if tag == "!!str" {
		n.Style = yaml.DoubleQuotedStyle
	}
	return n
}

// space skips white space and comments.
func (p *jnParser) space() {
	for p.i < len(p.s) {
		switch c := p.s[p.i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			p.i++
		case c == '/' && p.i+1 < len(p.s) && p.s[p.i+1] == '/':
			for p.i < len(p.s) && p.s[p.i] != '\n' && p.s[p.i] != '\r' {
				p.i++
			}
		case c == '/' && p.i+1 < len(p.s) && p.s[p.i+1] == '*':
			end := strings.Index(p.s[p.i+2:], "*/")
			if end < 0 {
				p.fail(p.i, "comment /* is never closed")
				p.i = len(p.s)
				return
			}
			p.i += 2 + end + 2
		case c == '/':
			p.fail(p.i, "unexpected '/': a comment starts with // or /*")
			return
		default:
			return
		}
	}
}

const jnMaxDepth = 64

func (p *jnParser) value(depth int) *yaml.Node {
	if depth > jnMaxDepth {
		return p.fail(p.i, "nested deeper than %d levels", jnMaxDepth)
	}
	if p.budget != nil {
		if *p.budget <= 0 {
			return p.fail(p.i, "more than %d values in the manifest's createOptions", maxCreateOptionsValues)
		}
		*p.budget--
	}
	if p.i >= len(p.s) {
		return p.fail(p.i, "unexpected end of text: want a value")
	}
	start := p.i
	switch c := p.s[p.i]; {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == '"' || c == '\'':
		s, ok := p.str()
		if !ok {
			return nil
		}
		return p.node(yaml.ScalarNode, "!!str", s, start)
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	case isIdentStart(rune(c)) || c >= utf8.RuneSelf:
		word := p.ident()
		switch word {
		case "true", "false":
			return p.node(yaml.ScalarNode, "!!bool", word, start)
		case "null":
			return p.node(yaml.ScalarNode, "!!null", "null", start)
		case "":
			return p.fail(start, "unexpected %s: want a value", p.describe())
		}
		return p.fail(start, "unexpected %q: want a value (an object, array, string, number, true, false or null)", word)
	}
	return p.fail(start, "unexpected %s: want a value (an object, array, string, number, true, false or null)", p.describe())
}

func isIdentStart(r rune) bool { return r == '_' || r == '$' || unicode.IsLetter(r) }
func isIdentPart(r rune) bool  { return isIdentStart(r) || unicode.IsDigit(r) }

// ident reads an unquoted name: letters, digits, '_' and '$'.
func (p *jnParser) ident() string {
	start := p.i
	for p.i < len(p.s) {
		r, size := utf8.DecodeRuneInString(p.s[p.i:])
		if !isIdentPart(r) {
			break
		}
		p.i += size
	}
	return p.s[start:p.i]
}

func (p *jnParser) number() *yaml.Node {
	start := p.i
	s := p.s
	if p.i < len(s) && s[p.i] == '-' {
		p.i++
	}
	digits := func() int {
		n := 0
		for p.i < len(s) && s[p.i] >= '0' && s[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if digits() == 0 {
		return p.fail(start, "invalid number")
	}
	float := false
	if p.i < len(s) && s[p.i] == '.' {
		float = true
		p.i++
		if digits() == 0 {
			return p.fail(start, "invalid number: want a digit after '.'")
		}
	}
	if p.i < len(s) && (s[p.i] == 'e' || s[p.i] == 'E') {
		float = true
		p.i++
		if p.i < len(s) && (s[p.i] == '+' || s[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return p.fail(start, "invalid number: want a digit in the exponent")
		}
	}
	if p.i < len(s) && isIdentPart(rune(s[p.i])) {
		return p.fail(start, "invalid number %q", s[start:p.i+1])
	}
	tag := "!!int"
	if float {
		tag = "!!float"
	}
	return p.node(yaml.ScalarNode, tag, s[start:p.i], start)
}

// str reads a string in double or single quotes.
func (p *jnParser) str() (string, bool) {
	start := p.i
	q := p.s[p.i]
	p.i++
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == q:
			p.i++
			return b.String(), true
		case c == '\\':
			if p.i+1 >= len(p.s) {
				p.fail(p.i, "unterminated string")
				return "", false
			}
			e := p.s[p.i+1]
			p.i += 2
			switch e {
			case '"', '\'', '\\', '/':
				b.WriteByte(e)
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'u':
				r, ok := p.hex4()
				if !ok {
					p.fail(p.i-2, `invalid \u escape: want 4 hex digits`)
					return "", false
				}
				if utf16IsHigh(r) && strings.HasPrefix(p.s[p.i:], `\u`) {
					save := p.i
					p.i += 2
					if r2, ok := p.hex4(); ok && utf16IsLow(r2) {
						r = (r-0xD800)<<10 + (r2 - 0xDC00) + 0x10000
					} else {
						p.i = save
					}
				}
				b.WriteRune(r)
			default:
				p.fail(p.i-2, "invalid escape \\%c in string", e)
				return "", false
			}
		default:
			r, size := utf8.DecodeRuneInString(p.s[p.i:])
			b.WriteRune(r)
			p.i += size
		}
	}
	p.fail(start, "unterminated string")
	return "", false
}

func utf16IsHigh(r rune) bool { return r >= 0xD800 && r < 0xDC00 }
func utf16IsLow(r rune) bool  { return r >= 0xDC00 && r < 0xE000 }

func (p *jnParser) hex4() (rune, bool) {
	if p.i+4 > len(p.s) {
		return 0, false
	}
	v, err := strconv.ParseUint(p.s[p.i:p.i+4], 16, 32)
	if err != nil {
		return 0, false
	}
	p.i += 4
	return rune(v), true
}

func (p *jnParser) object(depth int) *yaml.Node {
	n := p.node(yaml.MappingNode, "!!map", "", p.i)
	n.Style = yaml.FlowStyle
	p.i++ // {
	for {
		p.space()
		if p.err != "" {
			return nil
		}
		if p.i >= len(p.s) {
			return p.fail(p.i, "unexpected end of text: want a key or '}'")
		}
		if p.s[p.i] == '}' {
			p.i++
			return n
		}
		kstart := p.i
		var key string
		switch c := p.s[p.i]; {
		case c == '"' || c == '\'':
			s, ok := p.str()
			if !ok {
				return nil
			}
			key = s
		default:
			key = p.ident()
			if key == "" {
				return p.fail(kstart, "unexpected %s: want a key", p.describe())
			}
		}
		k := p.node(yaml.ScalarNode, "!!str", key, kstart)
		p.space()
		if p.err != "" {
			return nil
		}
		if p.i >= len(p.s) || p.s[p.i] != ':' {
			return p.fail(p.i, "unexpected %s: want ':' after the key %q", p.describe(), key)
		}
		p.i++
		p.space()
		if p.err != "" {
			return nil
		}
		v := p.value(depth + 1)
		if v == nil {
			return nil
		}
		n.Content = append(n.Content, k, v)
		p.space()
		if p.err != "" {
			return nil
		}
		if p.i >= len(p.s) {
			return p.fail(p.i, "unexpected end of text: want ',' or '}'")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return n
		default:
			return p.fail(p.i, "unexpected %s: want ',' or '}'", p.describe())
		}
	}
}

func (p *jnParser) array(depth int) *yaml.Node {
	n := p.node(yaml.SequenceNode, "!!seq", "", p.i)
	n.Style = yaml.FlowStyle
	p.i++ // [
	for {
		p.space()
		if p.err != "" {
			return nil
		}
		if p.i >= len(p.s) {
			return p.fail(p.i, "unexpected end of text: want a value or ']'")
		}
		if p.s[p.i] == ']' {
			p.i++
			return n
		}
		v := p.value(depth + 1)
		if v == nil {
			return nil
		}
		n.Content = append(n.Content, v)
		p.space()
		if p.err != "" {
			return nil
		}
		if p.i >= len(p.s) {
			return p.fail(p.i, "unexpected end of text: want ',' or ']'")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			return n
		default:
			return p.fail(p.i, "unexpected %s: want ',' or ']'", p.describe())
		}
	}
}
