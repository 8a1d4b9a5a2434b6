package hub

import (
	"fmt"
	"strings"
	"testing"
)

// TestRoutesThroughBroker: WHERE conditions on properties and JSON bodies,
// several sinks, and priorities deciding the order a backlog drains in.
func TestRoutesThroughBroker(t *testing.T) {
	p0, p9 := 0, 9
	h := startHub(t, func(c *Config) {
		c.Routes = map[string]RouteConfig{
			"hot":    {Route: `FROM /messages/* WHERE is_defined($body.temp) AND $body.temp > 25 INTO BrokeredEndpoint("/modules/alarm/inputs/hot")`, Priority: &p0},
			"labels": {Route: `FROM /messages/modules/cam/outputs/* WHERE label = 'person' INTO BrokeredEndpoint("/modules/alarm/inputs/people")`},
			"all":    {Route: `FROM /messages/* INTO BrokeredEndpoint("/modules/alarm/inputs/all")`, Priority: &p9},
		}
	}, false)
	dev := h.addIdentity(t, IdentitySpec{Name: "thermo"})
	cam, _ := h.EnsureModule(t.Context(), "cam")
	alarm, _ := h.EnsureModule(t.Context(), "alarm")
	d, err := h.sasClient(t, "thermo", dev.PrimaryKey, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := h.sasClient(t, testDevice+"/cam", cam.PrimaryKey, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	json := "$.ct=application%2Fjson&$.ce=utf-8"
	// Queued while the alarm module is away.
	mustOK(t, d.Publish("devices/thermo/messages/events/"+json, 1, false, `{"temp":30}`))                           // hot + all
	mustOK(t, d.Publish("devices/thermo/messages/events/"+json, 1, false, `{"temp":20}`))                           // all
	mustOK(t, d.Publish("devices/thermo/messages/events/", 1, false, `{"temp":40}`))                                // all: no JSON content type, $body undefined
	mustOK(t, c.Publish("devices/"+testDevice+"/modules/cam/messages/events/$.on=det&label=person", 1, false, `p`)) // people + all
	mustOK(t, c.Publish("devices/"+testDevice+"/modules/cam/messages/events/$.on=det&label=Person", 1, false, `P`)) // all (ordinal, case-sensitive)

	got := newReceived()
	a, err := h.sasClient(t, testDevice+"/alarm", alarm.PrimaryKey, false, got.handler)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, a.Subscribe("devices/"+testDevice+"/modules/alarm/inputs/#", 1, nil))
	var seq []string
	for range 7 {
		m := got.next(t, "routed message")
		input := strings.Split(m.Topic(), "/")[5]
		seq = append(seq, input+":"+string(m.Payload()))
	}
	// A marker that only the catch-all route takes, published now, is the
	// next message: an eighth copy of the queued ones would come first.
	mustOK(t, d.Publish("devices/thermo/messages/events/"+json, 1, false, `{"temp":21}`))
	if m := got.next(t, "the marker"); string(m.Payload()) != `{"temp":21}` {
		t.Errorf("an eighth message: %s %q (want the marker next)", m.Topic(), m.Payload())
	}
	byInput := map[string][]string{}
	for _, s := range seq {
		in, body, _ := strings.Cut(s, ":")
		byInput[in] = append(byInput[in], body)
	}
	want := map[string]string{
		"hot":    `[{"temp":30}]`,
		"people": `[p]`,
		"all":    `[{"temp":30} {"temp":20} {"temp":40} p P]`,
	}
	for in, w := range want {
		if g := fmt.Sprint(byInput[in]); g != w {
			t.Errorf("input %s got %s, want %s", in, g, w)
		}
	}
}

// TestPriorityOrderInOneQueue: two routes into the same module input with
// different priorities; a backlog drains highest priority first, FIFO
// within each.
func TestPriorityOrderInOneQueue(t *testing.T) {
	p0, p9 := 0, 9
	h := startHub(t, func(c *Config) {
		c.Routes = map[string]RouteConfig{
			"urgent": {Route: `FROM /messages/* WHERE urgent = 'yes' INTO BrokeredEndpoint("/modules/alarm/inputs/q")`, Priority: &p0},
			"bulk":   {Route: `FROM /messages/* WHERE NOT is_defined(urgent) INTO BrokeredEndpoint("/modules/alarm/inputs/q")`, Priority: &p9},
		}
	}, true)
	d, err := h.connect(t, "d", "", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"b1", "b2", "u1", "b3", "u2", "b4"} {
		bag := ""
		if m[0] == 'u' {
			bag = "urgent=yes"
		}
		mustOK(t, d.Publish("devices/d/messages/events/"+bag, 1, false, m))
	}
	got := newReceived()
	a, err := h.connect(t, testDevice+"/alarm", "", "", false, got.handler)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, a.Subscribe("devices/"+testDevice+"/modules/alarm/inputs/#", 1, nil))
	var order []string
	for range 6 {
		order = append(order, string(got.next(t, "backlog").Payload()))
	}
	if fmt.Sprint(order) != "[u1 u2 b1 b2 b3 b4]" {
		t.Errorf("drain order %v, want [u1 u2 b1 b2 b3 b4]", order)
	}
}
