package mqtt

import (
	"errors"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestReadStoppedBetweenPackets: a client the server stops while its read
// loop is between two packets (a shutdown under load, a takeover, an
// expired token) ended Read with no error, as a client's own DISCONNECT
// does, so its Will was dropped; stopped in the middle of a read, the same
// client's Will went out. Read now returns the server's cause, and nil
// only for the client's own DISCONNECT. (Found as a flaky
// TestWillDelayAcrossRestart in ledge: the Will of a client still
// connected at a stop was sometimes lost.)
func TestReadStoppedBetweenPackets(t *testing.T) {
	for _, tc := range []struct {
		cause error
		want  error
	}{
		{packets.ErrServerShuttingDown, packets.ErrServerShuttingDown},
		{packets.ErrSessionTakenOver, packets.ErrSessionTakenOver},
		{errClientStop, errClientStop},
		{packets.CodeDisconnect, nil},
		{nil, nil},
	} {
		cl, r, _ := newTestClient()
		defer r.Close()
		cl.Stop(tc.cause)
		err := cl.Read(func(*Client, packets.Packet) error { t.Error("a packet handled after the stop"); return nil })
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("Read after Stop(%v): %v, want %v", tc.cause, err, tc.want)
		}
	}
}
