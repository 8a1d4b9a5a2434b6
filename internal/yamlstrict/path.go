package yamlstrict

import (
	"strconv"
	"strings"
)

// Field paths in errors are written one way everywhere ("pipelines[0].
// detect.model", `routes."a.b"`): Field and Index build them.

// Field returns path extended by mapping keys, joined with dots. A key
// that is empty or holds a dot, a space or a quote is quoted, so the path
// reads back unambiguously; a key over 80 bytes is cut with "...".
func Field(path string, keys ...string) string {
	var b strings.Builder
	b.WriteString(path)
	for _, k := range keys {
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		if len(k) > 80 {
			k = strings.ToValidUTF8(k[:77], "") + "..."
		}
		if k == "" || strings.ContainsAny(k, ". \"") {
			b.WriteString(strconv.Quote(k))
		} else {
			b.WriteString(k)
		}
	}
	return b.String()
}

// Index returns path extended by a list index: "path[i]".
func Index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}
