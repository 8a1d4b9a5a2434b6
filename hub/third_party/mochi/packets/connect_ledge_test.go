package packets

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// connectBody is a CONNECT's bytes after its fixed header: protocol name
// "MQTT", the level, flags, keep-alive 60, (MQTT 5: no properties), the
// client id, (a Will: MQTT 5 no Will properties) and the fields after it.
func connectBody(level, flags byte, fields ...string) []byte {
	b := []byte{0, 4, 'M', 'Q', 'T', 'T', level, flags, 0, 60}
	if level == 5 {
		b = append(b, 0)
	}
	for i, f := range fields {
		if level == 5 && i == 1 && flags&0x04 != 0 {
			b = append(b, 0) // Will properties
		}
		b = append(b, byte(len(f)>>8), byte(len(f)))
		b = append(b, f...)
	}
	return b
}

// TestConnectValidateEmptyFields: a Will Message and a Password of zero
// bytes are valid (MQTT 3.1.1 §3.1.3.4 "zero or more bytes", §3.1.3.5
// "0 to 65535 bytes"; MQTT 5 §3.1.3.4-5 Binary Data); they were refused
// as protocol errors (0x82), and mosquitto accepts both. A Will topic of
// zero bytes is still refused [MQTT-4.7.3-1]. Added by ledge (patch 40).
func TestConnectValidateEmptyFields(t *testing.T) {
	for _, level := range []byte{4, 5} {
		for _, tc := range []struct {
			desc   string
			flags  byte
			fields []string
			want   Code
		}{
			{"empty retained Will payload", 0x02 | 0x04 | 0x08 | 0x20, []string{"dev", "status/dev", ""}, CodeSuccess},
			{"user name and empty password", 0x02 | 0x80 | 0x40, []string{"dev", "someone", ""}, CodeSuccess},
			{"empty Will topic", 0x02 | 0x04, []string{"dev", "", "gone"}, ErrProtocolViolationWillFlagNoPayload},
		} {
			body := connectBody(level, tc.flags, tc.fields...)
			pk := Packet{FixedHeader: FixedHeader{Type: Connect, Remaining: len(body)}, ProtocolVersion: level}
			require.NoError(t, pk.ConnectDecode(body), "level %d: %s", level, tc.desc)
			require.Equal(t, tc.want, pk.ConnectValidate(), "level %d: %s", level, tc.desc)
		}
	}
}
