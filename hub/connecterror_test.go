package hub

import (
	"errors"
	"fmt"
	"testing"

	pahopackets "github.com/eclipse/paho.mqtt.golang/packets"
)

// TestConnectErrorSaysTheCause: a failed connection to the upstream
// broker is said by its cause ("dial tcp ...: connection refused"), as the
// log, ledge status, ledge hub and the dashboard show it, without the MQTT
// client's "network Error : " in front.
func TestConnectErrorSaysTheCause(t *testing.T) {
	cause := errors.New("dial tcp 127.0.0.1:1883: connect: connection refused")
	if got := connectError(fmt.Errorf("%w : %w", pahopackets.ErrorNetworkError, cause), "mqtt"); got != cause.Error() {
		t.Errorf("got %q, want %q", got, cause.Error())
	}
	got := connectError(pahopackets.ErrorRefusedBadUsernameOrPassword, "mqtt")
	if want := "the broker refuses the credentials (bad user name or password): check hub.upstream.username and password"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
