package pipeline

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// DefaultMQTTTopic is the topic of the mqtt action when none is set.
const DefaultMQTTTopic = "ledge/{pipeline}/events"

// mqttAction publishes the event as JSON to an MQTT broker. The client
// connects in the background and reconnects by itself; a publish while it
// is down fails and is retried by the runner.
type mqttAction struct {
	client mqtt.Client
	topic  string
	qos    byte
	retain bool
	url    string
}

func newMQTTAction(s ActionSpec, pipeline, clientID string) *mqttAction {
	url := s.URL
	// paho knows tcp, ssl, ws, wss (and tls, mqtts as aliases of ssl).
	switch {
	case strings.HasPrefix(url, "mqtt://"):
		url = "tcp://" + strings.TrimPrefix(url, "mqtt://")
	case strings.HasPrefix(url, "mqtts://"):
		url = "ssl://" + strings.TrimPrefix(url, "mqtts://")
	}
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(clientID).
		SetUsername(s.Username).SetPassword(s.Password).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(30 * time.Second).SetCleanSession(true).SetOrderMatters(false).
		SetConnectTimeout(5 * time.Second).SetWriteTimeout(5 * time.Second)
	a := &mqttAction{client: mqtt.NewClient(o), topic: s.Topic, qos: byte(s.QoS), retain: s.Retain, url: redactURL(s.URL)}
	if a.topic == "" {
		a.topic = DefaultMQTTTopic
	}
	a.client.Connect() // with ConnectRetry, keeps trying in the background
	return a
}

func expandTopic(t string, e *Event) string {
	return strings.NewReplacer("{pipeline}", e.Pipeline, "{type}", e.Type, "{class}", cmp.Or(e.Class, "-"), "{zone}", cmp.Or(e.Zone, "-")).Replace(t)
}

func (a *mqttAction) do(ctx context.Context, e *Event) error {
	if !a.client.IsConnectionOpen() {
		return fmt.Errorf("mqtt %s: not connected", redactURL(a.url))
	}
	body, err := eventJSON(e)
	if err != nil {
		return permanent(err)
	}
	tok := a.client.Publish(expandTopic(a.topic, e), a.qos, a.retain, body)
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return fmt.Errorf("mqtt %s: %w", redactURL(a.url), err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("mqtt %s: publish: %w", redactURL(a.url), ctx.Err())
	}
}

func (a *mqttAction) close() { a.client.Disconnect(250) }
