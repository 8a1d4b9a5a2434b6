package inference

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// COCO80 returns the 80 COCO class names, index = class id: the labels of
// most pretrained detectors, used when a model with 80 classes comes with
// no labels.
func COCO80() []string { return slices.Clone(coco80) }

// ParseLabels reads a labels file: one class name per line, line n (from 0)
// naming class n. Surrounding spaces and a trailing CR are trimmed; blank
// lines at the end are ignored; a blank line in the middle, a file with no
// names or one that is not UTF-8 is an error naming the line.
func ParseLabels(data []byte) ([]string, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("labels are not UTF-8 text")
	}
	lines := strings.Split(string(bytes.TrimRight(data, " \t\r\n")), "\n")
	if len(lines) == 1 && strings.TrimSpace(lines[0]) == "" {
		return nil, errors.New("labels file is empty: want one class name per line")
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" {
			return nil, fmt.Errorf("line %d: empty class name (line n names class n-1; remove the blank line)", i+1)
		}
		out[i] = l
	}
	return out, nil
}

// LoadLabels reads a labels file from disk (see [ParseLabels]).
func LoadLabels(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read labels: %w", err)
	}
	l, err := ParseLabels(data)
	if err != nil {
		return nil, fmt.Errorf("labels %s: %w", path, err)
	}
	return l, nil
}

// ParseNames parses the `names` entry of Ultralytics model metadata: a
// Python dict literal such as {0: 'person', 1: 'bicycle'} (or a list
// ['person', 'bicycle']). Keys must be 0..n-1, each once.
func ParseNames(s string) ([]string, error) {
	p := &pyParser{s: s}
	p.space()
	var names map[int]string
	var list []string
	switch {
	case p.eat('{'):
		names = map[int]string{}
		for {
			p.space()
			if p.eat('}') {
				break
			}
			pos := p.i
			k, err := p.int()
			if err != nil {
				return nil, err
			}
			p.space()
			if !p.eat(':') {
				return nil, p.errf("want ':' after key")
			}
			p.space()
			v, err := p.str()
			if err != nil {
				return nil, err
			}
			if _, dup := names[k]; dup {
				return nil, fmt.Errorf("names: key %d repeated at offset %d", k, pos)
			}
			names[k] = v
			p.space()
			if p.eat(',') {
				continue
			}
			p.space()
			if !p.eat('}') {
				return nil, p.errf("want ',' or '}'")
			}
			break
		}
	case p.eat('['):
		for {
			p.space()
			if p.eat(']') {
				break
			}
			v, err := p.str()
			if err != nil {
				return nil, err
			}
			list = append(list, v)
			p.space()
			if p.eat(',') {
				continue
			}
			p.space()
			if !p.eat(']') {
				return nil, p.errf("want ',' or ']'")
			}
			break
		}
	default:
		return nil, p.errf("want '{' or '['")
	}
	p.space()
	if p.i != len(p.s) {
		return nil, p.errf("unexpected text after the names")
	}
	if names != nil {
		list = make([]string, len(names))
		for k, v := range names {
			if k < 0 || k >= len(names) {
				return nil, fmt.Errorf("names: class ids must be 0..%d, got %d", len(names)-1, k)
			}
			list[k] = v
		}
	}
	if len(list) == 0 {
		return nil, errors.New("names: no classes")
	}
	return list, nil
}

type pyParser struct {
	s string
	i int
}

func (p *pyParser) errf(msg string) error {
	return fmt.Errorf("names: %s at offset %d", msg, p.i)
}

func (p *pyParser) space() {
	for p.i < len(p.s) && strings.IndexByte(" \t\r\n", p.s[p.i]) >= 0 {
		p.i++
	}
}

func (p *pyParser) eat(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *pyParser) int() (int, error) {
	start := p.i
	for p.i < len(p.s) && (p.s[p.i] >= '0' && p.s[p.i] <= '9' || p.i == start && p.s[p.i] == '-') {
		p.i++
	}
	n, err := strconv.Atoi(p.s[start:p.i])
	if err != nil || p.i-start > 9 {
		p.i = start
		return 0, p.errf("want a class id")
	}
	return n, nil
}

// str reads a single- or double-quoted Python string with backslash escapes.
func (p *pyParser) str() (string, error) {
	if p.i >= len(p.s) || (p.s[p.i] != '\'' && p.s[p.i] != '"') {
		return "", p.errf("want a quoted name")
	}
	q := p.s[p.i]
	p.i++
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == q:
			p.i++
			return b.String(), nil
		case c == '\\' && p.i+1 < len(p.s):
			p.i++
			switch e := p.s[p.i]; e {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			default:
				b.WriteByte(e)
			}
			p.i++
		default:
			b.WriteByte(c)
			p.i++
		}
	}
	return "", p.errf("unterminated string")
}
