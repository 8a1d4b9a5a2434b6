package mqtt

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// Patch 50 (LEDGE.md): topic matching makes no copy of a particle's
// subscriptions and no empty maps per message, and a match without a
// subscription identifier gets no Identifiers map; what it finds is as
// before.
func TestSubscribersFewAllocations(t *testing.T) {
	x := NewTopicsIndex()
	x.Subscribe("cl1", packets.Subscription{Filter: "a/b", Qos: 1})
	x.Subscribe("cl2", packets.Subscription{Filter: "a/+", Identifier: 7})
	x.Subscribe("cl2", packets.Subscription{Filter: "a/#", Identifier: 9, Qos: 2})
	x.Subscribe("cl3", packets.Subscription{Filter: "a/b"})
	x.Subscribe("cl3", packets.Subscription{Filter: "#"})

	subs := x.Subscribers("a/b")
	require.Len(t, subs.Subscriptions, 3)
	require.Nil(t, subs.Subscriptions["cl1"].Identifiers)
	require.Equal(t, byte(1), subs.Subscriptions["cl1"].Qos)
	require.Equal(t, map[string]int{"a/+": 7, "a/#": 9}, subs.Subscriptions["cl2"].Identifiers)
	require.Equal(t, byte(2), subs.Subscriptions["cl2"].Qos)
	require.Contains(t, subs.Subscriptions, "cl3")
	require.Empty(t, subs.Shared)
	require.Empty(t, subs.InlineSubscriptions)

	one := NewTopicsIndex()
	one.Subscribe("cl1", packets.Subscription{Filter: "a/b"})
	// The Subscribers, its Subscriptions map and the map's group: 3
	// (there were 6, and 4.1 KB a message in all: four maps, a copy of
	// the particle's map and an Identifiers map, with their groups).
	require.LessOrEqual(t, testing.AllocsPerRun(100, func() { one.Subscribers("a/b") }), 3.0)
	require.Less(t, testing.AllocsPerRun(100, func() { releaseSubscribers(one.pooledSubscribers("a/b")) }), 1.0)
}

// A Subscribers handed to a shared-subscription hook is not reused.
func TestReleaseSubscribersKeepsSharedOnes(t *testing.T) {
	x := NewTopicsIndex()
	x.Subscribe("cl1", packets.Subscription{Filter: SharePrefix + "/g/a/b"})
	x.Subscribe("cl2", packets.Subscription{Filter: "a/b"})
	subs := x.pooledSubscribers("a/b")
	require.Len(t, subs.Shared, 1)
	require.NotNil(t, subs.SharedSelected, "a hook may write to SharedSelected")
	releaseSubscribers(subs)
	require.Len(t, subs.Subscriptions, 1, "not cleared: a hook may still hold it")
}

// Each packet read keeps its own bytes (the payload is not copied again
// after ReadPacket made it): reading the next packet does not change it.
func TestReadPacketPayloadIsItsOwn(t *testing.T) {
	var in bytes.Buffer
	for _, p := range []string{"first", "other"} {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "a/b", Payload: []byte(p), ProtocolVersion: 4}
		require.NoError(t, pk.PublishEncode(&in))
	}
	cl, _, _ := newTestClient()
	cl.Net.bconn = bufio.NewReader(&in)
	var got []packets.Packet
	for i := 0; i < 2; i++ {
		fh := new(packets.FixedHeader)
		require.NoError(t, cl.ReadFixedHeader(fh))
		pk, err := cl.ReadPacket(fh)
		require.NoError(t, err)
		got = append(got, pk)
	}
	require.Equal(t, "first", string(got[0].Payload))
	require.Equal(t, "other", string(got[1].Payload))
}

// Patches 51-52: a message from a network publisher goes into an idle
// subscriber's outbuf and is written by the publisher's goroutine: at
// once when the publisher has nothing more buffered, else as one batch
// before the publisher next reads its socket. Nothing is queued for
// WriteLoop, and the bytes arrive whole and in order.
func TestPublisherWritesHeldBatch(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	reader, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	defer reader.Close()
	conn, err := l.Accept()
	require.NoError(t, err)

	s := New(&Options{Logger: logger, InlineClientWrites: true})
	require.NoError(t, s.AddHook(new(AllowHook), nil))
	sub := s.NewClient(conn, "tcp", "sub", false)
	sub.Properties.ProtocolVersion = 4
	defer sub.Stop(nil)
	// No WriteLoop: a queued packet would stay on the outbound channel.
	s.Clients.Add(sub)
	s.Topics.Subscribe("sub", packets.Subscription{Filter: "a/b"})

	pr, pw := net.Pipe()
	defer pr.Close()
	defer pw.Close()
	pub := s.NewClient(pr, "tcp", "pub", false)
	pub.Properties.ProtocolVersion = 4
	defer pub.Stop(nil)

	msg := func(p string) packets.Packet {
		return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "a/b", Payload: []byte(p)}
	}
	wire := func(p string) []byte { return append([]byte{0x30, byte(5 + len(p)), 0, 3, 'a', '/', 'b'}, p...) }
	expect := func(want []byte) {
		t.Helper()
		got := make([]byte, len(want))
		reader.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := io.ReadFull(reader, got)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}

	// More buffered: held in the subscriber's outbuf, in order.
	pub.State.readMore.Store(true)
	s.publishToSubscribersFrom(pub, msg("1"))
	s.publishToSubscribersFrom(pub, msg("22"))
	require.Zero(t, len(sub.State.outbound), "held, not queued")
	require.Equal(t, append(wire("1"), wire("22")...), sub.Net.outbuf.Bytes())

	// The publisher's reader goes to its socket: the batch is written first.
	go pw.Write([]byte{0xc0})
	_, err = pub.Net.bconn.ReadByte()
	require.NoError(t, err)
	require.Nil(t, sub.Net.outbuf)
	expect(append(wire("1"), wire("22")...))

	// Nothing more buffered: written at once.
	pub.State.readMore.Store(false)
	s.publishToSubscribersFrom(pub, msg("333"))
	require.Nil(t, sub.Net.outbuf)
	require.Zero(t, len(sub.State.outbound))
	expect(wire("333"))

	// Held when the publisher's reader stops: written as Read returns.
	pub.State.readMore.Store(true)
	s.publishToSubscribersFrom(pub, msg("4"))
	pub.Stop(nil)
	require.NoError(t, pub.Read(func(*Client, packets.Packet) error { return nil }))
	expect(wire("4"))
}
