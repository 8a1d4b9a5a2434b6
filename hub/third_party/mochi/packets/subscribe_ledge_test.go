package packets

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSubscriptionIdentifierOnceAndNotZero: a SUBSCRIBE's Subscription
// Identifier is 1 to 268,435,455 and given once (MQTT 5 §3.8.2.1.2: both
// are Protocol Errors); a PUBLISH to a client carries one per matching
// subscription (§3.3.4). Added by ledge (patch 42): both were granted.
func TestSubscriptionIdentifierOnceAndNotZero(t *testing.T) {
	subscribe := func(props ...byte) *Packet {
		b := append([]byte{0, 1, byte(len(props))}, props...)
		b = append(b, 0, 1, 'a', 1)
		pk := &Packet{FixedHeader: FixedHeader{Type: Subscribe, Qos: 1, Remaining: len(b)}, ProtocolVersion: 5}
		if err := pk.SubscribeDecode(b); err != nil {
			return &Packet{ReasonCode: 0xff, Properties: Properties{User: []UserProperty{{Key: err.Error()}}}}
		}
		return pk
	}
	require.Equal(t, CodeSuccess, subscribe(0x0b, 7).SubscribeValidate())
	require.Equal(t, 7, subscribe(0x0b, 7).Filters[0].Identifier)
	require.Equal(t, ErrProtocolViolationZeroSubID, subscribe(0x0b, 0).SubscribeValidate())

	twice := []byte{0, 1, 4, 0x0b, 1, 0x0b, 2, 0, 1, 'a', 1}
	pk := &Packet{FixedHeader: FixedHeader{Type: Subscribe, Qos: 1, Remaining: len(twice)}, ProtocolVersion: 5}
	err := pk.SubscribeDecode(twice) // reported as patch 29 reports a duplicate: malformed properties
	require.ErrorIs(t, err, ErrMalformedProperties)
	require.ErrorContains(t, err, ErrProtocolViolationDuplicateProperty.Reason)

	// A PUBLISH from the server: two identifiers, both kept.
	pub := []byte{0, 1, 'a', 4, 0x0b, 1, 0x0b, 2, 'x'}
	pk = &Packet{FixedHeader: FixedHeader{Type: Publish, Remaining: len(pub)}, ProtocolVersion: 5}
	require.NoError(t, pk.PublishDecode(pub))
	require.Equal(t, []int{1, 2}, pk.Properties.SubscriptionIdentifier)
}
