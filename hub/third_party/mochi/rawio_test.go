// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2026 ledge

//go:build unix

package mqtt

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	client, err = net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() })
	server, err = l.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { server.Close() })
	return server, client
}

// LEDGE patch 61: a plain TCP client's reads and writes go through its raw
// socket with InlineClientWrites, and behave as net.Conn's: data, a
// deadline, the peer's close; a write takes what the socket takes and
// never waits; neither allocates.
func TestRawIOReadWrite(t *testing.T) {
	pr, pw := net.Pipe()
	defer pr.Close()
	defer pw.Close()
	require.Nil(t, newRawIO(pr)) // no raw socket: net.Conn as before

	server, client := tcpPair(t)
	r := newRawIO(server)
	require.NotNil(t, r)

	_, err := client.Write([]byte("hello world"))
	require.NoError(t, err)
	buf := make([]byte, 5)
	n, err := io.ReadFull(r, buf)
	require.NoError(t, err)
	require.Equal(t, "hello", string(buf[:n]))

	// A read with nothing there waits for the socket (the netpoller).
	go func() {
		time.Sleep(10 * time.Millisecond)
		client.Write(bytes.Repeat([]byte("x"), 600))
	}()
	got := make([]byte, 606)
	_, err = io.ReadFull(r, got)
	require.NoError(t, err)
	require.Equal(t, " world"+string(bytes.Repeat([]byte("x"), 600)), string(got))

	// Reading allocates nothing (each read made a closure before).
	_, err = client.Write(bytes.Repeat([]byte("y"), 1000))
	require.NoError(t, err)
	one := make([]byte, 1)
	_, err = io.ReadFull(r, one)
	require.NoError(t, err)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := r.Read(one); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs)

	// A deadline: the read ends with the net.Conn error.
	_, err = io.ReadFull(r, make([]byte, 1000-1-101)) // the rest of the y: AllocsPerRun read 101
	require.NoError(t, err)
	require.NoError(t, server.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
	_, err = r.Read(buf)
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout())
	require.NoError(t, server.SetReadDeadline(time.Time{}))

	// Writes: what the socket takes now, never waiting for a reader.
	require.NoError(t, client.(*net.TCPConn).SetReadBuffer(4096))
	require.NoError(t, server.(*net.TCPConn).SetWriteBuffer(4096))
	big := bytes.Repeat([]byte("z"), 4<<20)
	n, err = r.writeNow(big)
	require.NoError(t, err)
	require.Greater(t, n, 0)
	require.Less(t, n, len(big))
	n2, err := r.writeNow(big[n:])
	require.NoError(t, err)
	require.Zero(t, n2) // full: nothing more now, and no wait

	// The peer's close: EOF.
	client2server, client2 := tcpPair(t)
	r2 := newRawIO(client2server)
	require.NoError(t, client2.Close())
	_, err = r2.Read(buf)
	require.ErrorIs(t, err, io.EOF)

	// Our own close: net.ErrClosed, as net.Conn reports it.
	require.NoError(t, server.Close())
	_, err = r.Read(buf)
	require.ErrorIs(t, err, net.ErrClosed)
	_, err = r.writeNow([]byte("late"))
	require.ErrorIs(t, err, net.ErrClosed)

	// A reset by the peer: the system call's error.
	s3, c3 := tcpPair(t)
	r3 := newRawIO(s3)
	require.NoError(t, c3.(*net.TCPConn).SetLinger(0))
	_, err = c3.Write([]byte("a"))
	require.NoError(t, err)
	_, err = io.ReadFull(r3, one)
	require.NoError(t, err)
	require.NoError(t, c3.Close())
	_, err = r3.Read(buf)
	require.ErrorIs(t, err, syscall.ECONNRESET)
}

// With InlineClientWrites a TCP client reads its packets, and the server
// writes to it (an ack: WritePacket), through the raw socket; without the
// option, or without a raw socket, through net.Conn as before.
func TestClientUsesRawSocket(t *testing.T) {
	server, client := tcpPair(t)
	s := New(&Options{Logger: logger, InlineClientWrites: true})
	cl := s.NewClient(server, "tcp", "raw", false)
	require.NotNil(t, cl.Net.raw)
	cl.Properties.ProtocolVersion = 4

	_, err := client.Write([]byte{0x40, 0x02, 0x00, 0x07}) // PUBACK 7
	require.NoError(t, err)
	fh := new(packets.FixedHeader)
	require.NoError(t, cl.ReadFixedHeader(fh))
	pk, err := cl.ReadPacket(fh)
	require.NoError(t, err)
	require.Equal(t, packets.Puback, pk.FixedHeader.Type)
	require.Equal(t, uint16(7), pk.PacketID)

	require.NoError(t, cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 9}))
	got := make([]byte, 4)
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadFull(client, got)
	require.NoError(t, err)
	require.Equal(t, []byte{0x40, 0x02, 0x00, 0x09}, got)

	other, _ := tcpPair(t)
	require.Nil(t, New(&Options{Logger: logger}).NewClient(other, "tcp", "plain", false).Net.raw)
	pr, pw := net.Pipe()
	defer pr.Close()
	defer pw.Close()
	require.Nil(t, s.NewClient(pr, "tcp", "pipe", false).Net.raw)
}

// A packet bigger than the socket takes at once: WritePacket writes the
// rest through net.Conn (waiting, as it did), all of it in order.
func TestWritePacketRawPartialWrite(t *testing.T) {
	server, client := tcpPair(t)
	require.NoError(t, server.(*net.TCPConn).SetWriteBuffer(4096))
	s := New(&Options{Logger: logger, InlineClientWrites: true})
	cl := s.NewClient(server, "tcp", "raw", false)
	cl.Properties.ProtocolVersion = 4
	payload := bytes.Repeat([]byte("p"), 1<<20)
	done := make(chan error, 1)
	go func() {
		done <- cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "a/b", Payload: payload})
	}()
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	fh := make([]byte, 1)
	_, err := io.ReadFull(client, fh)
	require.NoError(t, err)
	require.Equal(t, byte(0x30), fh[0])
	var rem, mult int = 0, 1
	for {
		_, err := io.ReadFull(client, fh)
		require.NoError(t, err)
		rem += int(fh[0]&127) * mult
		if fh[0]&128 == 0 {
			break
		}
		mult *= 128
	}
	body := make([]byte, rem)
	nn, err := io.ReadFull(client, body)
	if err != nil {
		t.Log("read", nn, "of", rem)
	}
	require.NoError(t, err)
	require.Equal(t, []byte{0, 3, 'a', '/', 'b'}, body[:5])
	require.Equal(t, payload, body[5:])
	require.NoError(t, <-done)
}
