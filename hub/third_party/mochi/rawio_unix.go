// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2026 ledge

//go:build unix

package mqtt

import (
	"io"
	"os"
	"syscall"
	"unsafe"
)

// rawIO reads and writes a client's plain TCP socket with raw non-blocking
// system calls, through its syscall.RawConn (LEDGE patch 61, with
// InlineClientWrites). A read or write through net.Conn (or through
// syscall.Write) enters the runtime's system-call state, and when every P
// was idle (as between the messages of a paced load) that wakes the
// runtime's sysmon thread, which then polls every 20 µs until all Ps are
// idle again: a futex wake-up and two or three context switches of a
// third thread per system call, a fifth of the server's CPU at 5,000
// QoS 1 messages a second. A non-blocking read or write never blocks, so
// it needs none of that; waiting for the socket is still the netpoller's
// (RawConn.Read parks the goroutine on EAGAIN, and honours deadlines).
// The functions handed to RawConn are made once per client, so a read or
// write allocates nothing.
type rawIO struct {
	rc syscall.RawConn

	rp     []byte // the read's buffer
	rn     int
	rerr   error
	readFn func(fd uintptr) bool

	wb      []byte // the write's bytes
	wn      int
	werr    error
	writeFn func(fd uintptr) bool
}

// newRawIO returns nil for a connection without a raw socket.
func newRawIO(c any) *rawIO {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil || rc == nil {
		return nil
	}
	r := &rawIO{rc: rc}
	r.readFn = r.doRead
	r.writeFn = r.doWrite
	return r
}

func (r *rawIO) doRead(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(r.rp))), uintptr(len(r.rp)))
		switch e {
		case 0:
			r.rn = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // the netpoller waits for the socket
		default:
			r.rerr = os.NewSyscallError("read", e)
			return true
		}
	}
}

// Read is for the client's read goroutine only.
func (r *rawIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rp, r.rn, r.rerr = p, 0, nil
	err := r.rc.Read(r.readFn)
	n, rerr := r.rn, r.rerr
	r.rp, r.rerr = nil, nil
	switch {
	case err != nil: // closed, a deadline passed: as net.Conn reports them
		return 0, err
	case rerr != nil:
		return 0, rerr
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (r *rawIO) doWrite(fd uintptr) bool {
	for r.wn < len(r.wb) {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&r.wb[r.wn])), uintptr(len(r.wb)-r.wn))
		switch e {
		case 0:
			if n == 0 {
				return true
			}
			r.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return true // one attempt: never wait for the socket here
		default:
			r.werr = os.NewSyscallError("write", e)
			return true
		}
	}
	return true
}

// writeNow writes what the socket takes of b now, without waiting; the
// caller holds the client's lock (writes are serialised by it).
func (r *rawIO) writeNow(b []byte) (int, error) {
	r.wb, r.wn, r.werr = b, 0, nil
	err := r.rc.Write(r.writeFn)
	n, werr := r.wn, r.werr
	r.wb, r.werr = nil, nil
	if err != nil {
		return n, err
	}
	return n, werr
}
