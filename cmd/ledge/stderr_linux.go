//go:build linux

package main

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"runtime/debug"
	"strings"
	"syscall"

	"ledge/internal/redact"
)

// nativeStderr takes over file descriptor 2, where C libraries (FFmpeg
// through OpenCV, OpenCV itself, ONNX Runtime) write their own messages:
// ledge's log writes to the returned file (the real stderr), and each line
// the libraries write becomes a DEBUG record of the log given to start,
// with URLs redacted. stop puts the real stderr back and waits for the
// last lines. Go's crash output still goes to the real stderr.
func nativeStderr() (real *os.File, start func(log *slog.Logger), stop func(), err error) {
	orig, err := syscall.Dup(2)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("dup stderr: %w", err)
	}
	syscall.CloseOnExec(orig)
	real = os.NewFile(uintptr(orig), "/dev/stderr")
	r, w, err := os.Pipe()
	if err != nil {
		real.Close()
		return nil, nil, nil, err
	}
	if err := syscall.Dup3(int(w.Fd()), 2, 0); err != nil {
		real.Close()
		r.Close()
		w.Close()
		return nil, nil, nil, fmt.Errorf("redirect stderr: %w", err)
	}
	w.Close() // fd 2 is now the pipe's only writer
	debug.SetCrashOutput(real, debug.CrashOptions{})
	done := make(chan struct{})
	var log *slog.Logger
	ready := make(chan struct{})
	go func() {
		defer close(done)
		<-ready
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 4096), 64<<10)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" {
				continue
			}
			log.Debug(redactURLs(line), "component", nativeSource(line))
		}
		r.Close()
	}()
	start = func(l *slog.Logger) { log = l; close(ready) }
	stop = func() {
		syscall.Dup3(orig, 2, 0) // closes the pipe's writer: the reader ends
		select {
		case <-ready:
		default:
			log = slog.New(slog.DiscardHandler)
			close(ready)
		}
		<-done
	}
	return real, start, stop, nil
}

// nativeSource tells which library wrote a line: FFmpeg's lines start
// with "[context @ 0x...]", OpenCV's with "[ WARN:" or "[ERROR:".
func nativeSource(line string) string {
	switch {
	case strings.HasPrefix(line, "[ WARN:"), strings.HasPrefix(line, "[ERROR:"), strings.HasPrefix(line, "[ INFO:"), strings.Contains(line, "OpenCV"):
		return "opencv"
	case strings.HasPrefix(line, "[") && strings.Contains(line, " @ 0x"):
		return "ffmpeg"
	}
	return "native"
}

var urlRe = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s'"]+`)

func redactURLs(s string) string { return urlRe.ReplaceAllStringFunc(s, redact.URL) }
