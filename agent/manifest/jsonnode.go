package manifest

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// maxDepth bounds nesting in manifests (Azure twins allow 10; createOptions
// and pipelines nest a little deeper).
const maxDepth = 64

// parseJSONNode parses strict JSON (the output of StandardizeJSONC) into a
// yaml.Node tree whose nodes carry 1-based lines and byte columns, so the
// same strict decoding and error locating serve YAML and JSON. Duplicate
// object keys are errors (encoding/json would silently keep the last).
func parseJSONNode(src *source, data []byte) (*yaml.Node, error) {
	p := &jsonParser{src: src, data: data}
	p.skipSpace()
	if p.i >= len(p.data) {
		return nil, p.errAt(p.i, nil, "empty document")
	}
	v, err := p.value(nil, 0)
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.i < len(p.data) {
		return nil, p.errAt(p.i, nil, fmt.Sprintf("unexpected %s after the end of the JSON value", p.describe(p.i)))
	}
	return &yaml.Node{Kind: yaml.DocumentNode, Line: 1, Column: 1, Content: []*yaml.Node{v}}, nil
}

type jsonParser struct {
	src   *source
	data  []byte
	i     int
	count int // values read so far
}

func (p *jsonParser) errAt(off int, path []string, msg string) *Error {
	line, col := p.src.position(off)
	return &Error{Path: renderPath(path), Line: line, Column: col, Offset: off, Msg: msg}
}

func (p *jsonParser) describe(off int) string {
	if off >= len(p.data) {
		return "end of input"
	}
	r, _ := utf8.DecodeRune(p.data[off:])
	return fmt.Sprintf("character %q", r)
}

func (p *jsonParser) skipSpace() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonParser) node(kind yaml.Kind, tag, value string, off int) *yaml.Node {
	line, col := p.src.position(off)
	n := &yaml.Node{Kind: kind, Tag: tag, Value: value, Line: line, Column: col}
	if tag == "!!str" {
		n.Style = yaml.DoubleQuotedStyle
	}
	return n
}

func (p *jsonParser) value(path []string, depth int) (*yaml.Node, error) {
	if depth > maxDepth {
		return nil, p.errAt(p.i, path, fmt.Sprintf("nested deeper than %d levels", maxDepth))
	}
	// Counted as they are read: a hostile document is refused before it
	// makes millions of nodes.
	if p.count++; p.count > maxNodes {
		return nil, p.errAt(p.i, path, fmt.Sprintf("document has more than %d values", maxNodes))
	}
	if p.i >= len(p.data) {
		return nil, p.errAt(p.i, path, "unexpected end of input: want a value")
	}
	start := p.i
	switch c := p.data[p.i]; {
	case c == '{':
		return p.object(path, depth)
	case c == '[':
		return p.array(path, depth)
	case c == '"':
		s, err := p.str(path)
		if err != nil {
			return nil, err
		}
		return p.node(yaml.ScalarNode, "!!str", s, start), nil
	case c == 't':
		return p.literal(path, "true", "!!bool")
	case c == 'f':
		return p.literal(path, "false", "!!bool")
	case c == 'n':
		return p.literal(path, "null", "!!null")
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number(path)
	}
	return nil, p.errAt(start, path, fmt.Sprintf("unexpected %s: want a value (object, array, string, number, true, false or null)", p.describe(start)))
}

func (p *jsonParser) literal(path []string, word, tag string) (*yaml.Node, error) {
	start := p.i
	if len(p.data)-p.i < len(word) || string(p.data[p.i:p.i+len(word)]) != word {
		return nil, p.errAt(start, path, fmt.Sprintf("invalid literal: want %s", word))
	}
	p.i += len(word)
	return p.node(yaml.ScalarNode, tag, word, start), nil
}

func (p *jsonParser) number(path []string) (*yaml.Node, error) {
	start := p.i
	d := p.data
	isFloat := false
	if p.i < len(d) && d[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(d) && d[p.i] == '0':
		p.i++
	case p.i < len(d) && d[p.i] >= '1' && d[p.i] <= '9':
		for p.i < len(d) && d[p.i] >= '0' && d[p.i] <= '9' {
			p.i++
		}
	default:
		return nil, p.errAt(start, path, "invalid number")
	}
	if p.i < len(d) && d[p.i] == '.' {
		isFloat = true
		p.i++
		if p.i >= len(d) || d[p.i] < '0' || d[p.i] > '9' {
			return nil, p.errAt(start, path, "invalid number: want a digit after '.'")
		}
		for p.i < len(d) && d[p.i] >= '0' && d[p.i] <= '9' {
			p.i++
		}
	}
	if p.i < len(d) && (d[p.i] == 'e' || d[p.i] == 'E') {
		isFloat = true
		p.i++
		if p.i < len(d) && (d[p.i] == '+' || d[p.i] == '-') {
			p.i++
		}
		if p.i >= len(d) || d[p.i] < '0' || d[p.i] > '9' {
			return nil, p.errAt(start, path, "invalid number: want a digit in the exponent")
		}
		for p.i < len(d) && d[p.i] >= '0' && d[p.i] <= '9' {
			p.i++
		}
	}
	tag := "!!int"
	if isFloat {
		tag = "!!float"
	}
	return p.node(yaml.ScalarNode, tag, string(d[start:p.i]), start), nil
}

// str reads a string at p.i (a '"') and returns its value.
func (p *jsonParser) str(path []string) (string, error) {
	start := p.i
	p.i++
	simple := true
	for p.i < len(p.data) {
		c := p.data[p.i]
		switch {
		case c == '"':
			p.i++
			raw := p.data[start:p.i]
			if simple {
				return string(raw[1 : len(raw)-1]), nil
			}
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return "", p.errAt(start, path, "invalid string: "+err.Error())
			}
			return s, nil
		case c == '\\':
			simple = false
			if p.i+1 >= len(p.data) {
				return "", p.errAt(p.i, path, "unterminated string")
			}
			switch e := p.data[p.i+1]; e {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i += 2
			case 'u':
				if p.i+6 > len(p.data) || !isHex4(p.data[p.i+2:p.i+6]) {
					return "", p.errAt(p.i, path, `invalid \u escape: want 4 hex digits`)
				}
				p.i += 6
			default:
				return "", p.errAt(p.i, path, fmt.Sprintf("invalid escape \\%c in string", e))
			}
		case c < 0x20:
			return "", p.errAt(p.i, path, "control character in string (newlines and tabs must be escaped as \\n and \\t)")
		case c >= 0x80:
			simple = false // let encoding/json replace invalid UTF-8
			p.i++
		default:
			p.i++
		}
	}
	return "", p.errAt(start, path, "unterminated string")
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func (p *jsonParser) object(path []string, depth int) (*yaml.Node, error) {
	n := p.node(yaml.MappingNode, "!!map", "", p.i)
	n.Style = yaml.FlowStyle
	p.i++ // {
	seen := map[string]*yaml.Node{}
	p.skipSpace()
	if p.i < len(p.data) && p.data[p.i] == '}' {
		p.i++
		return n, nil
	}
	for {
		p.skipSpace()
		if p.i >= len(p.data) || p.data[p.i] != '"' {
			return nil, p.errAt(p.i, path, fmt.Sprintf("unexpected %s: want a key in double quotes", p.describe(p.i)))
		}
		kstart := p.i
		key, err := p.str(path)
		if err != nil {
			return nil, err
		}
		kpath := with(path, key)
		if first, dup := seen[key]; dup {
			return nil, p.errAt(kstart, kpath, fmt.Sprintf("duplicate key %q (first at line %d)", key, first.Line))
		}
		k := p.node(yaml.ScalarNode, "!!str", key, kstart)
		seen[key] = k
		p.skipSpace()
		if p.i >= len(p.data) || p.data[p.i] != ':' {
			return nil, p.errAt(p.i, kpath, fmt.Sprintf("unexpected %s: want ':' after the key", p.describe(p.i)))
		}
		p.i++
		p.skipSpace()
		v, err := p.value(kpath, depth+1)
		if err != nil {
			return nil, err
		}
		n.Content = append(n.Content, k, v)
		p.skipSpace()
		if p.i >= len(p.data) {
			return nil, p.errAt(p.i, path, "unexpected end of input: want ',' or '}'")
		}
		switch p.data[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return n, nil
		default:
			return nil, p.errAt(p.i, path, fmt.Sprintf("unexpected %s: want ',' or '}'", p.describe(p.i)))
		}
	}
}

func (p *jsonParser) array(path []string, depth int) (*yaml.Node, error) {
	n := p.node(yaml.SequenceNode, "!!seq", "", p.i)
	n.Style = yaml.FlowStyle
	p.i++ // [
	p.skipSpace()
	if p.i < len(p.data) && p.data[p.i] == ']' {
		p.i++
		return n, nil
	}
	for {
		p.skipSpace()
		v, err := p.value(with(path, index(len(n.Content))), depth+1)
		if err != nil {
			return nil, err
		}
		n.Content = append(n.Content, v)
		p.skipSpace()
		if p.i >= len(p.data) {
			return nil, p.errAt(p.i, path, "unexpected end of input: want ',' or ']'")
		}
		switch p.data[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			return n, nil
		default:
			return nil, p.errAt(p.i, path, fmt.Sprintf("unexpected %s: want ',' or ']'", p.describe(p.i)))
		}
	}
}
