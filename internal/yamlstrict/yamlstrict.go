// Package yamlstrict decodes YAML into Go structs strictly: a key the
// target type does not have is an error naming the key's path and line, so
// a typo in ledge.yaml or a manifest never passes silently. It is shared by
// the config loader and the manifest parsers.
//
// Decode is safe for concurrent use.
package yamlstrict

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Error is a decoding error at a place in the document.
type Error struct {
	Line   int    // 1-based; 0 when unknown
	Column int    // 1-based; 0 when unknown
	Path   string // dotted field path, e.g. "pipelines[0].detect.model"
	Msg    string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Decode unmarshals one YAML document into v, a pointer. Keys v's type does
// not know, more than one document and type mismatches are errors with the
// line; an empty document leaves v unchanged.
func Decode(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return syntaxError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return &Error{Line: extra.Line, Msg: "more than one YAML document ('---'); want one"}
	} else if !errors.Is(err, io.EOF) {
		return syntaxError(err)
	}
	return DecodeNode(&doc, v, "")
}

// DecodeNode checks node against v's type, then decodes it into v. Paths in
// errors are prefixed with path.
func DecodeNode(node *yaml.Node, v any, path string) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return errors.New("yamlstrict: decode target must be a non-nil pointer")
	}
	c := &checker{paths: map[int]string{}, scalars: map[int][]scalarAt{}}
	if err := c.check(node, rv.Type().Elem(), path, 0); err != nil {
		return err
	}
	if err := node.Decode(v); err != nil {
		return c.typeError(err, path)
	}
	return nil
}

// checker walks a document against a type, remembering the field path of
// the first value on each line, and every scalar with the type it goes
// into, so type errors can name the value (yaml reports only a line, and a
// flow mapping such as {name: a, count: many} holds several on one).
type checker struct {
	paths   map[int]string
	scalars map[int][]scalarAt
}

// scalarAt is a scalar of the document, its field path and target type.
type scalarAt struct {
	node *yaml.Node
	path string
	t    reflect.Type
}

func (c *checker) note(n *yaml.Node, path string) {
	if _, ok := c.paths[n.Line]; !ok && path != "" && n.Kind == yaml.ScalarNode {
		c.paths[n.Line] = path
	}
}

// failingOn returns the path of the first scalar on line that does not
// decode into its type, when the line holds more than one.
func (c *checker) failingOn(line int) (string, bool) {
	cands := c.scalars[line]
	if len(cands) < 2 {
		return "", false
	}
	for _, s := range cands {
		if s.node.Decode(reflect.New(s.t).Interface()) != nil {
			return s.path, true
		}
	}
	return "", false
}

var (
	unmarshalerType     = reflect.TypeFor[yaml.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

const maxDepth = 64

func (c *checker) check(n *yaml.Node, t reflect.Type, path string, depth int) error {
	c.note(n, path)
	if depth > maxDepth {
		return &Error{Line: n.Line, Column: n.Column, Path: path, Msg: "nested too deeply"}
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil
		}
		return c.check(n.Content[0], t, path, depth+1)
	case yaml.AliasNode:
		return c.check(n.Alias, t, path, depth+1)
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && path != "" {
		c.scalars[n.Line] = append(c.scalars[n.Line], scalarAt{node: n, path: path, t: t})
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) || reflect.PointerTo(t).Implements(textUnmarshalerType) {
		return nil // the type checks its own input
	}
	if (n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode) && isScalar(t.Kind()) {
		// yaml says only "line N: cannot unmarshal !!map into string",
		// the line of the mapping's first key, which may be another's.
		got := "a mapping"
		if n.Kind == yaml.SequenceNode {
			got = "a list"
		}
		want := t.String()
		if w, ok := typeWords[want]; ok {
			want = w
		}
		return &Error{Line: n.Line, Column: n.Column, Path: path, Msg: fmt.Sprintf("got %s, want %s", got, want)}
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil // yaml reports the type mismatch with its line
		}
		fields, anyKey := structFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Value == "<<" && k.Tag == "!!merge" {
				continue
			}
			ft, ok := fields[k.Value]
			if !ok {
				if anyKey {
					continue // an inline map takes any other key
				}
				return &Error{Line: k.Line, Column: k.Column, Path: Field(path, k.Value),
					Msg: fmt.Sprintf("unknown key %q%s", k.Value, suggest(k.Value, fields))}
			}
			if err := c.check(val, ft, Field(path, k.Value), depth+1); err != nil {
				return err
			}
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return nil
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := c.check(n.Content[i+1], t.Elem(), Field(path, n.Content[i].Value), depth+1); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return nil
		}
		for i, item := range n.Content {
			if err := c.check(item, t.Elem(), Index(path, i), depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// isScalar reports whether a value of kind k is written as one YAML scalar.
func isScalar(k reflect.Kind) bool {
	switch k {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

// structFields maps YAML keys to field types, following ",inline"; anyKey
// reports an inline map, which takes keys no field has.
func structFields(t reflect.Type) (fields map[string]reflect.Type, anyKey bool) {
	out := map[string]reflect.Type{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("yaml")
			name, opts, _ := strings.Cut(tag, ",")
			if !f.IsExported() && !(f.Anonymous && strings.Contains(opts, "inline")) {
				continue
			}
			if name == "-" {
				continue
			}
			if strings.Contains(opts, "inline") {
				ft := f.Type
				for ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Map {
					anyKey = true
					continue
				}
				walk(ft)
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			out[name] = f.Type
		}
	}
	walk(t)
	return out, anyKey
}

// suggest names a known key that differs from key only in case or by one
// edit, as a hint.
func suggest(key string, fields map[string]reflect.Type) string {
	known := make([]string, 0, len(fields))
	for f := range fields {
		known = append(known, f)
	}
	best := Suggest(key, known)
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// Suggest returns the known name that key differs from only in case or
// by at most two edits, or that starts with key when key has 8 characters
// or more (storeAndForwardConfig), the first in byte order when several
// do; or "".
// Parsers that accept unknown keys use it for their "did you mean".
func Suggest(key string, known []string) string {
	best := ""
	for _, f := range known {
		lf, lk := strings.ToLower(f), strings.ToLower(key)
		// A look-alike, or the start of a long name (storeAndForwardConfig).
		if lf == lk || editDistance(lf, lk) <= 2 || (len(lk) >= 8 && strings.HasPrefix(lf, lk)) {
			if best == "" || f < best {
				best = f
			}
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func syntaxError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line int
	if strings.HasPrefix(msg, "line ") {
		if _, e := fmt.Sscanf(msg, "line %d:", &line); e == nil {
			msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
		}
	}
	return &Error{Line: line, Msg: "invalid YAML: " + msg}
}

// typeWords says in words what a Go type yaml names in its errors takes.
var typeWords = map[string]string{
	"time.Duration": "a duration (500ms, 5s, 2m, 1h)",
	// hub.routes in ledge.yaml: a manifest's routes may be strings, these
	// are mappings.
	"hub.RouteConfig": `a route: {route: "FROM ... INTO ...", priority: 0}`,
}

// unmarshalRe matches yaml/v3's "cannot unmarshal !!str `x` into int".
var unmarshalRe = regexp.MustCompile(`^cannot unmarshal !!\w+ (.*) into (.*)$`)

func (c *checker) typeError(err error, path string) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) || len(te.Errors) == 0 {
		return &Error{Path: path, Msg: err.Error()}
	}
	// Report the first problem; yaml phrases it as "line N: cannot unmarshal ...".
	msg := te.Errors[0]
	var line int
	if _, e := fmt.Sscanf(msg, "line %d:", &line); e == nil {
		msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
	}
	if m := unmarshalRe.FindStringSubmatch(msg); m != nil {
		want := m[2]
		if w, ok := typeWords[want]; ok {
			want = w
		}
		msg = fmt.Sprintf("got %s, want %s", m[1], want)
	}
	if p, ok := c.failingOn(line); ok {
		path = p
	} else if p, ok := c.paths[line]; ok {
		path = p
	}
	return &Error{Line: line, Path: path, Msg: msg}
}
