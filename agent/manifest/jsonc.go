package manifest

// StandardizeJSONC turns JSON with comments into strict JSON the way
// Microsoft's tooling reads Azure manifests: `// line` and `/* block */`
// comments and trailing commas before `}` or `]` are accepted. It replaces
// each byte it removes with a space (newlines inside block comments stay
// newlines), so the output has the same length and every byte offset, line
// and column in it is the same in the input: errors found in the output
// point into the original text unchanged.
//
// A comma is trailing only after a value: `[,]` and `{"a": ,}` are left
// for the parser to refuse. Strings are copied untouched (a "//" inside a
// string is not a comment).
// Anything else that is not JSON is left for the JSON parser to report. The
// only error is a block comment that is never closed, returned with its
// byte offset.
func StandardizeJSONC(data []byte) ([]byte, error) {
	out := make([]byte, len(data))
	copy(out, data)
	pendingComma := -1  // offset of a ',' that may turn out to be trailing
	afterValue := false // the last token ended a value: a ',' may trail
	i := 0
	for i < len(out) {
		c := out[i]
		switch {
		case c == '"':
			pendingComma = -1
			i = skipString(out, i)
			afterValue = true
		case c == '/' && i+1 < len(out) && out[i+1] == '/':
			for i < len(out) && out[i] != '\n' {
				if out[i] != '\r' {
					out[i] = ' '
				}
				i++
			}
		case c == '/' && i+1 < len(out) && out[i+1] == '*':
			start := i
			out[i], out[i+1] = ' ', ' '
			i += 2
			closed := false
			for i < len(out) {
				if out[i] == '*' && i+1 < len(out) && out[i+1] == '/' {
					out[i], out[i+1] = ' ', ' '
					i += 2
					closed = true
					break
				}
				if out[i] != '\n' && out[i] != '\r' {
					out[i] = ' '
				}
				i++
			}
			if !closed {
				return nil, &Error{Offset: start, Msg: "block comment /* is never closed"}
			}
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == ',':
			pendingComma = -1
			if afterValue {
				pendingComma = i
			}
			afterValue = false
			i++
		case c == '}' || c == ']':
			if pendingComma >= 0 {
				out[pendingComma] = ' '
			}
			pendingComma = -1
			afterValue = true
			i++
		default:
			pendingComma = -1
			afterValue = c != '{' && c != '[' && c != ':'
			i++
		}
	}
	return out, nil
}

// skipString returns the offset just past the string starting at data[i]
// (a '"'), or len(data) when it is not closed.
func skipString(data []byte, i int) int {
	i++
	for i < len(data) {
		switch data[i] {
		case '\\':
			i += 2
			continue
		case '"':
			return i + 1
		case '\n':
			return i // a raw newline ends it; the parser reports it
		}
		i++
	}
	return len(data)
}
