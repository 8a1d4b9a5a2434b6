package manifest

// CompareVersions orders deployment versions: it returns -1, 0 or +1 as a
// is older than, the same as, or newer than b. Runs of digits compare as
// numbers and everything else byte by byte, so "9" < "10", "1.9" < "1.10"
// and "2024-06-01" < "2024-06-12"; leading zeros do not count ("07" ==
// "7"). An empty version is older than any other.
func CompareVersions(a, b string) int {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		ca, cb := a[i], b[j]
		if isDigit(ca) && isDigit(cb) {
			si, sj := i, j
			for i < len(a) && isDigit(a[i]) {
				i++
			}
			for j < len(b) && isDigit(b[j]) {
				j++
			}
			na, nb := trimZeros(a[si:i]), trimZeros(b[sj:j])
			if len(na) != len(nb) {
				return sign(len(na) - len(nb))
			}
			if na != nb {
				if na < nb {
					return -1
				}
				return 1
			}
			continue
		}
		if ca != cb {
			if ca < cb {
				return -1
			}
			return 1
		}
		i++
		j++
	}
	return sign((len(a) - i) - (len(b) - j))
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func trimZeros(s string) string {
	for len(s) > 1 && s[0] == '0' {
		s = s[1:]
	}
	return s
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}
