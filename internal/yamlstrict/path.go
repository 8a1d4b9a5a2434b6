package yamlstrict

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Field paths in errors are written one way everywhere ("pipelines[0].
// detect.model", `routes."a.b"`): Field and Index build them.

// Field returns path extended by mapping keys, joined with dots. A key
// that is empty or holds a dot, a quote, white space, a character that
// does not print or bytes that are not UTF-8 is quoted (Go syntax: a newline or an escape sequence is
// written escaped, never raw into a message or a terminal), so the path
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
		if k == "" || strings.ContainsAny(k, ".\"") || strings.ContainsFunc(k, needsQuote) || !utf8.ValidString(k) {
			b.WriteString(strconv.Quote(k))
		} else {
			b.WriteString(k)
		}
	}
	return b.String()
}

// needsQuote reports whether a key holding r is quoted.
func needsQuote(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }

// Index returns path extended by a list index: "path[i]".
func Index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}
