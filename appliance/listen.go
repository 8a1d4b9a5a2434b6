package appliance

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// explainListen turns "address already in use" into an error that names
// the ledge.yaml key that moves the listener; other errors pass as they
// are.
func (c *Config) explainListen(err error) error {
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		return err
	}
	var op *net.OpError
	port := ""
	if errors.As(err, &op) && op.Addr != nil {
		_, port, _ = net.SplitHostPort(op.Addr.String())
	}
	for _, k := range []struct{ key, addr, flag string }{
		{"http.listen", c.HTTP.Listen, " (or --listen)"},
		{"http.listenTLS", c.HTTP.ListenTLS, ""},
		{"hub.listen.mqtt", c.Hub.Listen.MQTT, ""},
		{"hub.listen.mqtts", c.Hub.Listen.MQTTS, ""},
		{"hub.listen.websocket", c.Hub.Listen.WebSocket, ""},
	} {
		if _, p, e := net.SplitHostPort(k.addr); e == nil && p == port && p != "" && p != "0" {
			return fmt.Errorf("%s: %s is in use by another program (or another ledge): stop it, or set %s in ledge.yaml%s to a free address (\"\" turns it off): %w",
				k.key, k.addr, k.key, k.flag, err)
		}
	}
	return err
}
