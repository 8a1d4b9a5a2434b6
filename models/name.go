package models

import (
	"fmt"
	"strings"

	"ledge/internal/fault"
)

// Names and versions become parts of paths in error messages, CLI
// arguments (NAME@VERSION) and pipeline specs (detect.model), never parts
// of file names: files are named by their digest. They are still kept
// plain, so that nothing that looks like a path or a flag gets in.
const (
	maxNameLen    = 64
	maxVersionLen = 64
)

// ValidName reports why name cannot name a model ("" when it can): 1 to 64
// letters, digits, '_', '.' or '-', starting with a letter or digit, not
// ending in ".onnx" (a pipeline would take it for a file).
func ValidName(name string) string {
	switch {
	case name == "":
		return "a model name is required"
	case len(name) > maxNameLen:
		return fmt.Sprintf("a model name has at most %d characters, %q has %d", maxNameLen, name, len(name))
	case !isAlnum(name[0]):
		return fmt.Sprintf("%q: a model name starts with a letter or a digit", name)
	case strings.HasSuffix(strings.ToLower(name), ".onnx"):
		return fmt.Sprintf("%q: a model name must not end in .onnx (pipelines would read it as a file)", name)
	case strings.Contains(name, ".."):
		return fmt.Sprintf("%q: a model name must not contain \"..\"", name)
	}
	if i := strings.IndexFunc(name, func(r rune) bool { return !isNameRune(r) }); i >= 0 {
		return fmt.Sprintf("%q: character %q at %d is not allowed in a model name (letters, digits, '_', '.', '-')", name, name[i], i)
	}
	return ""
}

// ValidVersion reports why v cannot be a model version ("" when it can):
// 1 to 64 letters, digits, '_', '.', '+' or '-', starting with a letter or
// digit.
func ValidVersion(v string) string {
	switch {
	case v == "":
		return "a version is required"
	case len(v) > maxVersionLen:
		return fmt.Sprintf("a version has at most %d characters, %q has %d", maxVersionLen, v, len(v))
	case !isAlnum(v[0]):
		return fmt.Sprintf("%q: a version starts with a letter or a digit", v)
	case strings.Contains(v, ".."):
		return fmt.Sprintf("%q: a version must not contain \"..\"", v)
	}
	if i := strings.IndexFunc(v, func(r rune) bool { return !isNameRune(r) && r != '+' }); i >= 0 {
		return fmt.Sprintf("%q: character %q at %d is not allowed in a version (letters, digits, '_', '.', '+', '-')", v, v[i], i)
	}
	return ""
}

// ParseRef splits "NAME@VERSION" (as the CLI takes it) and checks both.
func ParseRef(ref string) (name, version string, err error) {
	name, version, ok := strings.Cut(ref, "@")
	if !ok {
		return "", "", fault.New(fault.Invalid, "%q: want NAME@VERSION", ref)
	}
	if why := ValidName(name); why != "" {
		return "", "", fault.New(fault.Invalid, "%s", why)
	}
	if why := ValidVersion(version); why != "" {
		return "", "", fault.New(fault.Invalid, "%s", why)
	}
	return name, version, nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func isNameRune(r rune) bool {
	return r < 0x80 && (isAlnum(byte(r)) || r == '_' || r == '.' || r == '-')
}
