package main

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"ledge/hub/fleet"
	"ledge/internal/testenv"
)

// natsCluster is three nats-server nodes (from its Go module) in one
// cluster, JetStream on, each with its MQTT listener: a clustered broker
// the user already runs.
type natsCluster struct {
	nodes []*natsserver.Server
	mqtt  []string
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startNATSCluster(t *testing.T) *natsCluster {
	t.Helper()
	c := &natsCluster{}
	var routes []string
	clusterPorts := make([]int, 3)
	for i := range 3 {
		clusterPorts[i] = freeTCPPort(t)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", clusterPorts[i]))
	}
	for i := range 3 {
		mqttPort := freeTCPPort(t)
		opts := &natsserver.Options{
			ServerName: fmt.Sprintf("ledge-n%d", i),
			Host:       "127.0.0.1",
			Port:       freeTCPPort(t),
			JetStream:  true,
			StoreDir:   t.TempDir(),
			Users:      []*natsserver.User{{Username: "fleet", Password: "fleet-pw"}},
			Cluster:    natsserver.ClusterOpts{Name: "ledge-fleet", Host: "127.0.0.1", Port: clusterPorts[i]},
			Routes:     natsserver.RoutesFromStr(strings.Join(routes, ",")),
			MQTT:       natsserver.MQTTOpts{Host: "127.0.0.1", Port: mqttPort},
			NoSigs:     true,
		}
		s, err := natsserver.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		c.nodes = append(c.nodes, s)
		c.mqtt = append(c.mqtt, fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort))
		t.Cleanup(s.Shutdown)
	}
	for _, s := range c.nodes {
		if !s.ReadyForConnections(30 * time.Second) {
			t.Fatalf("nats node %s not ready", s.Name())
		}
	}
	// MQTT needs JetStream's meta leader: wait until each node's MQTT
	// listener takes a connection.
	waitFor(t, 60*time.Second, "the cluster's JetStream", func() bool {
		for _, s := range c.nodes {
			if !s.JetStreamIsClustered() || s.JetStreamIsCurrent() == false {
				return false
			}
		}
		return true
	})
	return c
}

// TestFleetRolloutNATSCluster runs a rollout across a three-node
// nats-server cluster through its MQTT listeners, devices spread over
// the nodes, and kills the node that the controller and a third of the
// devices are on in the middle of it.
func TestFleetRolloutNATSCluster(t *testing.T) {
	testenv.Docker(t)
	nc := startNATSCluster(t)
	img := testImage(t, "fleetnats")
	n := 6
	f := newFleet(t, n, nc.mqtt, func(i int) string { return "site: berlin, group: a" })
	dumpOnFail = func() {
		out, errOut, _ := ledgeIn(t, "", f.env(), "fleet", "devices")
		t.Logf("devices:\n%s%s", out, errOut)
		t.Logf("device 0:\n%s", tail(f.devices[0].stderr.String(), 3000))
	}
	waitFor(t, 60*time.Second, "6 devices online", func() bool {
		online := 0
		for _, r := range f.devicesJSON() {
			if r.Online && r.Tags["group"] == "a" {
				online++
			}
		}
		return online == n
	})
	ctl := f.startController()
	dumpOnFail = func() {
		out, errOut, _ := ledgeIn(t, "", f.env(), "fleet", "devices")
		t.Logf("devices:\n%s%s", out, errOut)
		out, errOut, _ = ledgeIn(t, "", f.env(), "fleet", "status", "people")
		t.Logf("status:\n%s%s", out, errOut)
		t.Logf("controller:\n%s", tail(ctl.stderr.String(), 4000))
	}
	t.Cleanup(func() { dumpOnFail = nil })
	start := time.Now()
	f.cli("deploy", "people", fleetManifest(t, f.dir, "people", img), "--target", "tags.group = 'a'",
		"--waves", "1,50%,100%", "--soak", "2s", "--abort-after", "50%")
	waitFor(t, 90*time.Second, "wave 1 converged", func() bool { return f.status("people").Converged >= 1 })
	t.Logf("wave 1 converged after %s; killing node %s (the controller's and devices 0 and 3's)", time.Since(start).Round(time.Millisecond), nc.nodes[0].Name())
	nc.nodes[0].Shutdown()
	waitFor(t, 180*time.Second, "people completed on the two nodes left", func() bool {
		st := f.status("people")
		return st.Phase == fleet.PhaseCompleted && st.Converged == n
	})
	t.Logf("people: %d devices in 3 waves across the cluster in %s", n, time.Since(start).Round(time.Millisecond))
	for i := range n {
		if got := f.mqttDeployments(i); len(got) != 1 {
			t.Errorf("%s took %v, want people once", f.ids[i], got)
		}
	}
}
