package manifest

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"ledge/internal/yamlstrict"
)

// Error is one problem in a manifest: what is wrong and where.
type Error struct {
	// Path is the field path, e.g. "modules.camera.restartPolicy", or for
	// an Azure manifest
	// `modulesContent.$edgeAgent."properties.desired".modules.camera.restartPolicy`.
	Path string
	// Line and Column are 1-based (0 when unknown); Offset is the byte
	// offset in the manifest as given (-1 when unknown).
	Line, Column, Offset int
	Msg                  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ", column %d", e.Column)
		}
		if e.Offset >= 0 {
			fmt.Fprintf(&b, " (byte %d)", e.Offset)
		}
		b.WriteString(": ")
	} else if e.Offset >= 0 {
		fmt.Fprintf(&b, "byte %d: ", e.Offset)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors are all the problems found in one manifest, in document order.
type Errors []*Error

// maxErrors bounds how many problems one manifest reports.
const maxErrors = 20

func (es Errors) Error() string {
	if len(es) == 1 {
		return es[0].Error()
	}
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return fmt.Sprintf("%d problems:\n  %s", len(es), strings.Join(s, "\n  "))
}

// Unwrap lets errors.As find each *Error.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// AsErrors returns the manifest problems in err, if it holds any.
func AsErrors(err error) Errors {
	var es Errors
	if errors.As(err, &es) {
		return es
	}
	var e *Error
	if errors.As(err, &e) {
		return Errors{e}
	}
	return nil
}

// problems collects errors and warnings while a manifest is read.
type problems struct {
	src  *source
	list Errors
	// warnings are things accepted but worth telling: each placed like an
	// error ("line 3, column 5: path: what").
	warnings []string
	// coBudget counts down the values createOptions may still hold.
	coBudget *int
}

// maxWarnings bounds how many warnings one manifest reports.
const maxWarnings = 100

// warn records a warning at path, located in the document.
func (p *problems) warn(path []string, format string, args ...any) {
	e := &Error{Path: renderPath(path), Offset: -1, Msg: fmt.Sprintf(format, args...)}
	if p.src != nil {
		p.src.locate(e, path)
	}
	p.addWarning(e)
}

// warnAt records a warning placed at node n.
func (p *problems) warnAt(n *yaml.Node, path []string, format string, args ...any) {
	p.addWarning(p.src.nodeError(n, path, fmt.Sprintf(format, args...)))
}

// maxMessage bounds the path and the message of one problem, so a
// hostile manifest (a megabyte key) cannot make megabyte messages.
const maxMessage = 1024

func clip(e *Error) *Error {
	if len(e.Path) > maxMessage {
		e.Path = strings.ToValidUTF8(e.Path[:maxMessage], "") + "..."
	}
	if len(e.Msg) > maxMessage {
		e.Msg = strings.ToValidUTF8(e.Msg[:maxMessage], "") + "..."
	}
	return e
}

// quiet reports whether warnings are no longer kept.
func (p *problems) quiet() bool { return len(p.warnings) > maxWarnings }

func (p *problems) addWarning(e *Error) {
	clip(e)
	switch {
	case len(p.warnings) < maxWarnings:
		p.warnings = append(p.warnings, e.Error())
	case len(p.warnings) == maxWarnings:
		p.warnings = append(p.warnings, "more warnings not shown")
	}
}

// at records a problem at path (segments), located in the document.
func (p *problems) at(path []string, format string, args ...any) {
	if len(p.list) >= maxErrors {
		return
	}
	e := &Error{Path: renderPath(path), Offset: -1, Msg: fmt.Sprintf(format, args...)}
	if p.src != nil {
		p.src.locate(e, path)
	}
	p.list = append(p.list, clip(e))
}

// add records an error that already knows its place.
func (p *problems) add(e *Error) {
	if len(p.list) < maxErrors {
		p.list = append(p.list, clip(e))
	}
}

func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	sort.SliceStable(p.list, func(i, j int) bool {
		a, b := p.list[i], p.list[j]
		if a.Line == 0 || b.Line == 0 {
			return false
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	return p.list
}

// renderPath writes path segments as every field path is written
// (yamlstrict.Field and Index): dots between keys, [i] for list indexes.
func renderPath(path []string) string {
	out := ""
	for _, s := range path {
		if i, ok := indexSegment(s); ok {
			out = yamlstrict.Index(out, i)
		} else {
			out = yamlstrict.Field(out, s)
		}
	}
	return out
}

// indexSegment reads a segment made by index.
func indexSegment(s string) (int, bool) {
	inner, ok := strings.CutPrefix(s, "[")
	if !ok {
		return 0, false
	}
	if inner, ok = strings.CutSuffix(inner, "]"); !ok {
		return 0, false
	}
	i, err := strconv.Atoi(inner)
	return i, err == nil && i >= 0
}

func index(i int) string { return fmt.Sprintf("[%d]", i) }

func with(path []string, more ...string) []string {
	out := make([]string, 0, len(path)+len(more))
	return append(append(out, path...), more...)
}
