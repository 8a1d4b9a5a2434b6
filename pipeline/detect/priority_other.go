//go:build !linux

package detect

// atLowPriority runs f (at normal priority where threads cannot be niced).
func atLowPriority(f func()) { f() }
