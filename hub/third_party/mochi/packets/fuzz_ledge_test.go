package packets

import (
	"testing"
)

// FuzzDecode: no packet a client can send makes a decoder panic (a panic
// in a connection's goroutine ends the whole process): each decoder, MQTT
// 3.1.1 and 5, on any bytes. Added by ledge (patch 30): a v5 SUBSCRIBE
// whose last filter had no options byte indexed past its end. A CONNECT
// that decodes is validated too (patch 40: empty Will payloads and
// passwords pass, a Will without a topic never does).
func FuzzDecode(f *testing.F) {
	f.Add(byte(Subscribe), byte(5), byte(2), []byte{0, 1, 0, 0, 1, 'a'})
	f.Add(byte(Publish), byte(5), byte(1), []byte{0, 1, 'a', 0, 1, 3, 0x02, 0, 0})
	f.Add(byte(Connect), byte(5), byte(0), []byte{0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 60, 0, 0, 1, 'x'})
	// patch 40: an empty Will payload, an empty password, an empty Will topic (3.1.1)
	f.Add(byte(Connect), byte(0), byte(0), []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x2e, 0, 60, 0, 1, 'x', 0, 1, 's', 0, 0})
	f.Add(byte(Connect), byte(0), byte(0), []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0xc2, 0, 60, 0, 1, 'x', 0, 1, 'u', 0, 0})
	f.Add(byte(Connect), byte(0), byte(0), []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x06, 0, 60, 0, 1, 'x', 0, 0, 0, 1, 'w'})
	// patch 42: a SUBSCRIBE with Subscription Identifier 0, and with two
	f.Add(byte(Subscribe), byte(5), byte(2), []byte{0, 1, 2, 0x0b, 0, 0, 1, 'a', 1})
	f.Add(byte(Subscribe), byte(5), byte(2), []byte{0, 1, 4, 0x0b, 1, 0x0b, 2, 0, 1, 'a', 1})
	f.Add(byte(Unsubscribe), byte(5), byte(2), []byte{0, 1, 0, 0, 1, 'a'})
	f.Add(byte(Auth), byte(5), byte(0), []byte{0x18, 2, 0x15, 0})
	f.Fuzz(func(t *testing.T, typ, version, flags byte, b []byte) {
		pk := Packet{ProtocolVersion: 4 + version%2}
		if err := pk.FixedHeader.Decode(typ<<4 | flags&0x0f); err != nil {
			return
		}
		pk.FixedHeader.Remaining = len(b)
		buf := append([]byte{}, b...)
		switch pk.FixedHeader.Type {
		case Connect:
			if pk.ConnectDecode(buf) == nil && pk.ConnectValidate() == CodeSuccess && pk.Connect.WillFlag && pk.Connect.WillTopic == "" {
				t.Fatalf("a CONNECT with a Will and no Will topic validated: % x", b)
			}
		case Connack:
			pk.ConnackDecode(buf)
		case Publish:
			pk.PublishDecode(buf)
		case Puback:
			pk.PubackDecode(buf)
		case Pubrec:
			pk.PubrecDecode(buf)
		case Pubrel:
			pk.PubrelDecode(buf)
		case Pubcomp:
			pk.PubcompDecode(buf)
		case Subscribe:
			if pk.SubscribeDecode(buf) == nil && pk.SubscribeValidate() == CodeSuccess && pk.ProtocolVersion == 5 &&
				(len(pk.Properties.SubscriptionIdentifier) > 1 || len(pk.Properties.SubscriptionIdentifier) == 1 && pk.Properties.SubscriptionIdentifier[0] == 0) {
				t.Fatalf("a SUBSCRIBE with Subscription Identifiers %v validated: % x", pk.Properties.SubscriptionIdentifier, b)
			}
		case Suback:
			pk.SubackDecode(buf)
		case Unsubscribe:
			if pk.UnsubscribeDecode(buf) == nil {
				pk.UnsubscribeValidate()
			}
		case Unsuback:
			pk.UnsubackDecode(buf)
		case Disconnect:
			pk.DisconnectDecode(buf)
		case Auth:
			pk.AuthDecode(buf)
		}
	})
}
