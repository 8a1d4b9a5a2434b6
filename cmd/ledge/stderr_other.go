//go:build !linux

package main

import (
	"log/slog"
	"os"
)

// nativeStderr leaves stderr alone outside Linux.
func nativeStderr() (*os.File, func(*slog.Logger), func(), error) {
	return os.Stderr, func(*slog.Logger) {}, func() {}, nil
}
