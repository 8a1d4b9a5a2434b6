//go:build !linux

package pipeline

// atLowPriority runs f (at normal priority where threads cannot be niced).
func atLowPriority(f func()) { f() }
