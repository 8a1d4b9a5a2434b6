// Package natstest runs a cluster of nats-server nodes (from its Go
// module) with JetStream and their MQTT listeners, for the fleet's tests
// against a clustered broker the user already runs. It knows one thing
// about nats-server's MQTT that the tests need to choose which node to
// kill: each node serves retained messages to a new subscription from
// an index of its own, kept current by a JetStream consumer (R1, placed
// on any node of the cluster); when the node that hosts it dies, the
// index stops learning new retained topics until that node returns
// ([Cluster.IndexHosts], docs/fleet.md).
//
// It is imported only by _test.go files.
package natstest

import (
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	natsserver "github.com/nats-io/nats-server/v2/server"
)

// Cluster is a running nats-server cluster.
type Cluster struct {
	t     testing.TB
	Nodes []*natsserver.Server
	opts  []*natsserver.Options
	// MQTT are the nodes' MQTT listeners, tcp://127.0.0.1:PORT.
	MQTT []string
	user string
	pass string
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start runs n nodes in one cluster (JetStream on, a user with a
// password) and returns once every node's JetStream is current and
// every node's MQTT listener took a connection (so each has made its
// MQTT state). $LEDGE_TEST_NATS_LOG=1 shows the servers' logs.
func Start(t testing.TB, n int, user, password string) *Cluster {
	t.Helper()
	c := &Cluster{t: t, user: user, pass: password}
	var routes []string
	clusterPorts := make([]int, n)
	for i := range n {
		clusterPorts[i] = freePort(t)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", clusterPorts[i]))
	}
	for i := range n {
		mqttPort := freePort(t)
		c.opts = append(c.opts, &natsserver.Options{
			ServerName: fmt.Sprintf("ledge-n%d", i),
			Host:       "127.0.0.1",
			Port:       freePort(t),
			JetStream:  true,
			StoreDir:   t.TempDir(),
			Users:      []*natsserver.User{{Username: user, Password: password}},
			Cluster:    natsserver.ClusterOpts{Name: "ledge-fleet", Host: "127.0.0.1", Port: clusterPorts[i]},
			Routes:     natsserver.RoutesFromStr(strings.Join(routes, ",")),
			MQTT:       natsserver.MQTTOpts{Host: "127.0.0.1", Port: mqttPort},
			NoSigs:     true,
		})
		c.MQTT = append(c.MQTT, fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort))
		c.Nodes = append(c.Nodes, nil)
	}
	for i := range n {
		c.run(i)
	}
	for i := range n {
		c.ready(i)
	}
	c.waitCurrent()
	for i := range n {
		c.Warm(i)
	}
	return c
}

func (c *Cluster) run(i int) {
	c.t.Helper()
	s, err := natsserver.NewServer(c.opts[i])
	if err != nil {
		c.t.Fatal(err)
	}
	if os.Getenv("LEDGE_TEST_NATS_LOG") != "" {
		s.ConfigureLogger()
	}
	go s.Start()
	c.t.Cleanup(s.Shutdown)
	c.Nodes[i] = s
}

func (c *Cluster) ready(i int) {
	c.t.Helper()
	if !c.Nodes[i].ReadyForConnections(60 * time.Second) {
		c.t.Fatalf("nats node %s not ready after 60s", c.Name(i))
	}
}

// waitCurrent waits until every running node's JetStream is clustered
// and current (MQTT needs JetStream's meta leader).
func (c *Cluster) waitCurrent() {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok := true
		for _, s := range c.Nodes {
			if s != nil && s.Running() && (!s.JetStreamIsClustered() || !s.JetStreamIsCurrent()) {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatal("the nats cluster's JetStream is not current after 60s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Name is node i's server name.
func (c *Cluster) Name(i int) string { return c.opts[i].ServerName }

// Warm connects an MQTT client to node i until the node accepts it
// (then the node has its MQTT state: sessions, the retained index).
func (c *Cluster) Warm(i int) {
	c.t.Helper()
	o := paho.NewClientOptions().AddBroker(c.MQTT[i]).SetClientID(fmt.Sprintf("natstest-warm-%d-%d", i, time.Now().UnixNano())).
		SetUsername(c.user).SetPassword(c.pass).SetCleanSession(true).SetConnectTimeout(10 * time.Second)
	deadline := time.Now().Add(60 * time.Second)
	for {
		cli := paho.NewClient(o)
		tok := cli.Connect()
		if tok.WaitTimeout(15*time.Second) && tok.Error() == nil {
			cli.Disconnect(0)
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("MQTT on %s: no connection within 60s: %v", c.Name(i), tok.Error())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Kill stops node i (its clients lose their connection; its store stays
// for Restart).
func (c *Cluster) Kill(i int) { c.Nodes[i].Shutdown() }

// Restart starts node i again on its ports and store, and waits for the
// cluster to be current and node i's MQTT to take a connection.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.run(i)
	c.ready(i)
	c.waitCurrent()
	c.Warm(i)
}

// IndexHosts says, for each running node, which node hosts the consumer
// that keeps its index of retained messages current (-1: none found
// yet). It reads the servers' monitoring data: the retained-message
// stream's consumers each node leads, and which node subscribes to each
// one's deliver subject.
func (c *Cluster) IndexHosts() []int {
	c.t.Helper()
	hosts := make([]int, len(c.Nodes))
	for i := range hosts {
		hosts[i] = -1
	}
	for h, hs := range c.Nodes {
		if hs == nil || !hs.Running() {
			continue
		}
		jsz, err := hs.Jsz(&natsserver.JSzOptions{Accounts: true, Streams: true, Consumer: true, Config: true})
		if err != nil {
			c.t.Fatal(err)
		}
		for _, a := range jsz.AccountDetails {
			for _, st := range a.Streams {
				if st.Name != "$MQTT_rmsgs" {
					continue
				}
				for _, ci := range st.Consumer {
					if ci.Config == nil || ci.Cluster == nil || ci.Cluster.Leader != hs.Name() || ci.Config.DeliverSubject == "" {
						continue
					}
					for o, on := range c.Nodes {
						if on == nil || !on.Running() {
							continue
						}
						sz, err := on.Subsz(&natsserver.SubszOptions{Subscriptions: true, Test: ci.Config.DeliverSubject, Limit: 1024})
						if err != nil {
							c.t.Fatal(err)
						}
						if len(sz.Subs) > 0 {
							hosts[o] = h
						}
					}
				}
			}
		}
	}
	return hosts
}

// ChooseKill chooses the node to kill so that exactly one other node
// loses its index of retained messages with it (stale), the other
// (healthy) keeping its own: the case a client must notice and steer
// around. When the placement allows no such choice it restarts a node
// (which places its index's consumer anew) and looks again.
func (c *Cluster) ChooseKill() (victim, stale, healthy int) {
	c.t.Helper()
	if len(c.Nodes) != 3 {
		c.t.Fatal("ChooseKill wants three nodes")
	}
	for attempt := range 12 {
		var hosts []int
		deadline := time.Now().Add(30 * time.Second)
		for {
			hosts = c.IndexHosts()
			found := true
			for _, h := range hosts {
				found = found && h >= 0
			}
			if found {
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("the retained-message index consumers of the nats nodes not found: %v", hosts)
			}
			time.Sleep(200 * time.Millisecond)
		}
		for v := range 3 {
			var fed []int
			for o := range 3 {
				if o != v && hosts[o] == v {
					fed = append(fed, o)
				}
			}
			if len(fed) == 1 {
				s := fed[0]
				return v, s, 3 - v - s
			}
		}
		// No node hosts exactly one other's consumer: place one anew.
		r := attempt % 3
		c.t.Logf("nats index placement %v: restarting %s to place its consumer anew", hosts, c.Name(r))
		c.Kill(r)
		c.Restart(r)
	}
	c.t.Fatal("no nats node to kill that leaves exactly one other stale, after 12 placements")
	return 0, 0, 0
}
