package manifest

import (
	"sort"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// source is a manifest document being read: its text and node tree, used
// to put a line, column and (for JSON) byte offset on errors.
type source struct {
	data       []byte
	json       bool  // columns are byte columns and offsets are exact
	lineStarts []int // byte offset of each line's first byte
	root       *yaml.Node
}

func newSource(data []byte, isJSON bool) *source {
	s := &source{data: data, json: isJSON, lineStarts: []int{0}}
	for i, c := range data {
		if c == '\n' {
			s.lineStarts = append(s.lineStarts, i+1)
		}
	}
	return s
}

// position returns the 1-based line and byte column of offset.
func (s *source) position(offset int) (line, col int) {
	i := sort.Search(len(s.lineStarts), func(i int) bool { return s.lineStarts[i] > offset }) - 1
	if i < 0 {
		i = 0
	}
	return i + 1, offset - s.lineStarts[i] + 1
}

// offset returns the byte offset of a JSON node's line and column, -1 for
// YAML (whose columns count characters).
func (s *source) offset(line, col int) int {
	if !s.json || line < 1 || line > len(s.lineStarts) {
		return -1
	}
	return s.lineStarts[line-1] + col - 1
}

// locate sets e's line, column and offset to the deepest node of path the
// document has.
func (s *source) locate(e *Error, path []string) {
	n := s.find(path)
	if n == nil {
		return
	}
	e.Line, e.Column = n.Line, n.Column
	e.Offset = s.offset(n.Line, n.Column)
}

// find walks path from the root and returns the deepest node reached.
func (s *source) find(path []string) *yaml.Node {
	n := s.root
	if n == nil {
		return nil
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	for _, seg := range path {
		next := child(n, seg)
		if next == nil {
			break
		}
		n = next
	}
	return n
}

// child returns the value under key seg of a mapping (keys compared
// exactly, then case-insensitively), or item [i] of a sequence.
func child(n *yaml.Node, seg string) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == seg {
				return n.Content[i+1]
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if equalFold(n.Content[i].Value, seg) {
				return n.Content[i+1]
			}
		}
	case yaml.SequenceNode:
		if len(seg) > 2 && seg[0] == '[' {
			if i, err := strconv.Atoi(seg[1 : len(seg)-1]); err == nil && i >= 0 && i < len(n.Content) {
				return n.Content[i]
			}
		}
	}
	return nil
}

// nodeError is an error placed at node n.
func (s *source) nodeError(n *yaml.Node, path []string, msg string) *Error {
	e := &Error{Path: renderPath(path), Offset: -1, Msg: msg}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
		e.Offset = s.offset(n.Line, n.Column)
	}
	return e
}
