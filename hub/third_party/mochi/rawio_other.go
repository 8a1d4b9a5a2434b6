// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2026 ledge

//go:build !unix

package mqtt

// rawIO: raw non-blocking reads and writes are for unix sockets only
// (rawio_unix.go); elsewhere every client reads and writes through its
// net.Conn.
type rawIO struct{}

func newRawIO(c any) *rawIO { return nil }

func (r *rawIO) Read(p []byte) (int, error) { panic("no raw sockets here") }

func (r *rawIO) writeNow(b []byte) (int, error) { panic("no raw sockets here") }
