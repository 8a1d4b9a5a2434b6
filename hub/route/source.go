package route

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// matchSource is edgeHub's source test: the message source, trimmed and
// with one trailing '/', starts with the route's prefix (cmp plus '/'),
// ignoring case. So /messages/modules/cam matches /messages/modules/cam and
// /messages/modules/cam/outputs/x but not /messages/modules/cam2.
func matchSource(cmp, src string) bool {
	src = strings.TrimRight(strings.TrimSpace(src), "/")
	j := 0
	for i := 0; i < len(cmp); {
		if j >= len(src) {
			return false
		}
		a, b := cmp[i], src[j]
		if a < utf8.RuneSelf && b < utf8.RuneSelf {
			if a != b && lowerASCII(a) != lowerASCII(b) {
				return false
			}
			i++
			j++
			continue
		}
		ra, na := utf8.DecodeRuneInString(cmp[i:])
		rb, nb := utf8.DecodeRuneInString(src[j:])
		if !equalFoldRune(ra, rb) {
			return false
		}
		i += na
		j += nb
	}
	return j == len(src) || src[j] == '/'
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func equalFoldRune(a, b rune) bool {
	if a == b {
		return true
	}
	for r := unicode.SimpleFold(a); r != a; r = unicode.SimpleFold(r) {
		if r == b {
			return true
		}
	}
	return false
}
