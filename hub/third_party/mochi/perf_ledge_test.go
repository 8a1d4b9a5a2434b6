package mqtt

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"sync/atomic"
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
	// (there were 10: four maps, a copy of the particle's map and an
	// Identifiers map, with their groups).
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

// Patch 51: a message from a publisher with nothing more buffered is
// written inline to an idle subscriber even right after the previous one
// (the 100 µs gap applies to a publisher with more to read).
func TestIdlePublisherWritesInline(t *testing.T) {
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
	cl := s.NewClient(conn, "tcp", "sub", false)
	cl.Properties.ProtocolVersion = 4
	defer cl.Stop(nil)
	// No WriteLoop: a queued packet stays on the outbound channel.

	sub := packets.Subscription{Filter: "a/b"}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "a/b", Payload: []byte("x")}
	atomic.StoreInt64(&cl.State.lastPublish, time.Now().UnixNano()+int64(time.Hour)) // as if a message had just gone
	_, err = s.publishToClientGated(cl, sub, pk, true)
	require.NoError(t, err)
	require.Zero(t, len(cl.State.outbound), "idle publisher: written inline, not queued")

	want := []byte{0x30, 6, 0, 3, 'a', '/', 'b', 'x'}
	got := make([]byte, len(want))
	reader.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadFull(reader, got)
	require.NoError(t, err)
	require.Equal(t, want, got)

	_, err = s.publishToClientGated(cl, sub, pk, false)
	require.NoError(t, err)
	require.Equal(t, 1, len(cl.State.outbound), "a publisher with more to read: queued for WriteLoop to batch")
}
