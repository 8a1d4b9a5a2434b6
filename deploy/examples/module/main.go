// Command module is an example container module (and the one ledge's
// tests deploy): a plain MQTT client (paho) that connects to the hub with
// what the agent injects
// (LEDGE_MQTT_URL, LEDGE_MQTT_USERNAME, LEDGE_MQTT_PASSWORD,
// LEDGE_MQTT_CA_FILE, LEDGE_DEVICE_ID, LEDGE_MODULE_ID). Modes:
//
//	sender    publish {"n":N,"label":"person"} on output "out" every 200 ms
//	receiver  print every message on its inputs ("got <topic> <payload>")
//
// Build it into a FROM scratch image with `make example-module`, then
// deploy deploy/examples/deployment-local.yaml.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

func main() {
	mode := "sender"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	dev, mod := os.Getenv("LEDGE_DEVICE_ID"), os.Getenv("LEDGE_MODULE_ID")
	opts := paho.NewClientOptions().AddBroker(os.Getenv("LEDGE_MQTT_URL")).
		SetClientID(dev + "/" + mod).
		SetUsername(os.Getenv("LEDGE_MQTT_USERNAME")).SetPassword(os.Getenv("LEDGE_MQTT_PASSWORD")).
		SetConnectRetry(true).SetConnectRetryInterval(500 * time.Millisecond).SetAutoReconnect(true).
		// paho's back-off otherwise grows to 10 minutes: after ledge
		// restarts, the module would stay away that long.
		SetMaxReconnectInterval(5 * time.Second)
	if ca := os.Getenv("LEDGE_MQTT_CA_FILE"); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			fmt.Println("read CA:", err)
			os.Exit(1)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		opts.SetTLSConfig(&tls.Config{RootCAs: pool})
	}
	paho.ERROR = log.New(os.Stdout, "paho: ", 0)
	opts.SetOnConnectHandler(func(c paho.Client) {
		fmt.Println("connected", os.Getenv("LEDGE_MQTT_URL"))
		if mode == "receiver" {
			c.Subscribe(fmt.Sprintf("devices/%s/modules/%s/inputs/#", dev, mod), 1, func(_ paho.Client, m paho.Message) {
				fmt.Printf("got %s %s\n", m.Topic(), m.Payload())
			})
		}
	})
	opts.SetConnectionLostHandler(func(_ paho.Client, err error) { fmt.Println("lost", err) })
	c := paho.NewClient(opts)
	c.Connect() // retries in the background until the hub answers
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	tick := time.NewTicker(200 * time.Millisecond)
	for n := 0; ; n++ {
		select {
		case <-stop:
			c.Disconnect(100)
			return
		case <-tick.C:
			if mode == "sender" && c.IsConnectionOpen() {
				topic := fmt.Sprintf("devices/%s/modules/%s/messages/events/$.on=out&$.ct=application%%2Fjson&$.ce=utf-8", dev, mod)
				c.Publish(topic, 1, false, fmt.Sprintf(`{"n":%d,"label":"person"}`, n))
			}
		}
	}
}
