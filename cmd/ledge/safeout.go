package main

import (
	"bytes"
	"io"
	"strconv"
	"unicode/utf8"
)

// safeOutput wraps what the CLI prints: text from outside (a device's
// state document, a client id, a server's error) may hold terminal
// controls, which would rewrite the operator's screen (ESC [1A ESC [2K
// erases the line before; ESC ]0; sets the window title; a lone CR or
// the C1 CSI do as much). Every control character but newline and tab is
// printed as Go quotes it (\x1b, \r, \u009b), and so is a byte that is
// not UTF-8. The CLI prints no colors or binary, so nothing of its own is
// lost.
func safeOutput(w io.Writer) io.Writer { return safeWriter{w} }

type safeWriter struct{ w io.Writer }

func (s safeWriter) Write(p []byte) (int, error) {
	i := 0
	for i < len(p) && isSafe(p[i:]) {
		_, size := utf8.DecodeRune(p[i:])
		i += size
	}
	if i == len(p) {
		return s.w.Write(p)
	}
	var b bytes.Buffer
	b.Grow(len(p) + 16)
	b.Write(p[:i])
	for rest := p[i:]; len(rest) > 0; {
		r, size := utf8.DecodeRune(rest)
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteString(`\x`)
			b.WriteString(strconv.FormatUint(uint64(rest[0])|0x100, 16)[1:])
		case isSafe(rest):
			b.Write(rest[:size])
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		rest = rest[size:]
	}
	if _, err := s.w.Write(b.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// isSafe: the rune at the start of p is printed as it is.
func isSafe(p []byte) bool {
	if p[0] < utf8.RuneSelf {
		c := p[0]
		return c == '\n' || c == '\t' || (c >= 0x20 && c != 0x7f)
	}
	r, size := utf8.DecodeRune(p)
	if r == utf8.RuneError && size == 1 {
		return false
	}
	return r >= 0xa0 // C1 controls (U+0080 to U+009F) are not
}
