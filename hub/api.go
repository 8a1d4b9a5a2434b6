package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"ledge/hub/azure"
	"ledge/hub/route"
	"ledge/internal/fault"
)

// AddIdentity creates a device, module or user identity. The result holds
// its secrets (keys, password, connection string): show them once.
func (h *Hub) AddIdentity(ctx context.Context, spec IdentitySpec) (Created, error) {
	c, err := h.ids.add(ctx, spec)
	if err != nil {
		return Created{}, err
	}
	c.ConnectionString = h.connString(&c.Identity)
	return c, nil
}

// RemoveIdentity deletes an identity and disconnects the clients its key
// authenticated.
func (h *Hub) RemoveIdentity(ctx context.Context, name string) error {
	id := h.ids.get(name)
	if err := h.ids.remove(ctx, name); err != nil {
		return err
	}
	if id != nil {
		// Its twin goes with it (and a device's, those of its modules
		// without an identity here), as in IoT Hub: made again, an
		// identity starts afresh.
		if err := h.twins.remove(ctx, id, id.Kind == KindDevice && !h.ownDevice(id.Device)); err != nil {
			h.log.Error("twins of a removed identity", "identity", id.Name, "err", err)
		}
	}
	// Every connection the identity's key opened ends: a device's also
	// those as its modules (its key authenticates them) and on behalf of
	// the devices behind it (skn), or a leaked key would stay connected
	// for as long as the tokens it signed are valid.
	// (Not this appliance's own modules: its key is none of theirs.)
	device := id != nil && id.Kind == KindDevice && !h.ownDevice(id.Device)
	h.sessions.Range(func(k, v any) bool {
		s := v.(*session)
		if strings.EqualFold(s.name, name) ||
			device && s.kind == KindModule && strings.EqualFold(s.device, id.Device) ||
			device && strings.EqualFold(s.auth, "sas-parent "+id.Name) {
			s.cl.Stop(fmt.Errorf("identity %s removed", name))
			h.dropSession(s)
		}
		return true
	})
	return nil
}

// Identities lists identities without their secrets.
func (h *Hub) Identities() []Identity { return h.ids.list() }

// ShowIdentity returns an identity with its keys and connection string.
func (h *Hub) ShowIdentity(name string) (Created, error) {
	id := h.ids.get(name)
	if id == nil {
		return Created{}, fault.New(fault.NotFound, "identity %q does not exist", name)
	}
	c := Created{Identity: *id, ConnectionString: h.connString(id)}
	if id.Kind == KindModule {
		c.Password = modulePassword(id)
	}
	return c, nil
}

// connString is the connection string of a key identity as an Azure IoT
// SDK takes it, pasted as is: HostName is the IoT Hub name tokens are
// scoped to, GatewayHostName where to connect (with the MQTTS port when it
// is not 8883, where the SDKs dial by default).
func (h *Hub) connString(id *Identity) string {
	return connectionString(h.IoTHubHostname(), h.gatewayHost(), id)
}

// gatewayHost is host[:port] of the hub's MQTT over TLS listener.
func (h *Hub) gatewayHost() string {
	if p := h.Ports().MQTTS; p != 0 && p != 8883 {
		return net.JoinHostPort(h.hostname, strconv.Itoa(p))
	}
	return h.hostname
}

// ModuleCredentials are what a container module needs to connect.
type ModuleCredentials struct {
	DeviceID         string `json:"deviceId"`
	ModuleID         string `json:"moduleId"`
	PrimaryKey       string `json:"primaryKey"`
	SecondaryKey     string `json:"secondaryKey"`
	ConnectionString string `json:"connectionString"` // HostName=...;DeviceId=...;ModuleId=...;SharedAccessKey=...;GatewayHostName=...
	Username         string `json:"username"`         // plain MQTT: <device>/<module>
	Password         string `json:"password"`         // plain MQTT password
	GenerationID     string `json:"generationId"`     // changes when the identity is re-created
	Hostname         string `json:"hostname"`
	IoTHubHostname   string `json:"iothubHostname"`
	CAPath           string `json:"caPath"`
	Ports            Ports  `json:"ports"`
}

// EnsureModule creates the identity of module (of this appliance's
// device) if it does not exist and returns its credentials.
func (h *Hub) EnsureModule(ctx context.Context, module string) (ModuleCredentials, error) {
	name := h.deviceID + "/" + module
	id := h.ids.get(name)
	if id == nil {
		if _, err := h.ids.add(ctx, IdentitySpec{Name: name, Kind: KindModule, ManagedBy: "agent"}); err != nil && !fault.Is(err, fault.Conflict) {
			return ModuleCredentials{}, err
		}
		id = h.ids.get(name)
	}
	if id.Kind != KindModule {
		return ModuleCredentials{}, fault.New(fault.Conflict, "identity %q exists and is not a module", name)
	}
	return ModuleCredentials{
		DeviceID: id.Device, ModuleID: id.Module, PrimaryKey: id.PrimaryKey, SecondaryKey: id.SecondaryKey,
		ConnectionString: h.connString(id), Username: id.Name, Password: modulePassword(id),
		GenerationID: generationID(id), Hostname: h.hostname, IoTHubHostname: h.IoTHubHostname(),
		CAPath: h.CAPath(), Ports: h.Ports(),
	}, nil
}

// SetModuleDesired replaces the desired properties of a module of this
// device (the agent applies a manifest's module twin); desired is a JSON
// object. The module's identity is made if it does not exist yet: the
// agent sets twins before it makes the containers (and a pipeline is a
// module without one).
func (h *Hub) SetModuleDesired(ctx context.Context, module string, desired json.RawMessage) error {
	var m map[string]any
	if err := json.Unmarshal(desired, &m); err != nil {
		return fault.New(fault.Invalid, "desired properties of %s: not a JSON object: %v", module, err)
	}
	if _, err := h.EnsureModule(ctx, module); err != nil {
		return err
	}
	_, err := h.SetDesired(ctx, h.deviceID+"/"+module, m)
	return err
}

// IoTHubHostname is the IoT Hub host name SAS tokens may be scoped to
// (hub.iothubHostname, else the hub's hostname).
func (h *Hub) IoTHubHostname() string {
	if h.cfg.IoTHubHostname != "" {
		return h.cfg.IoTHubHostname
	}
	return h.hostname
}

// RemoveModule deletes a module identity of this device (no error if
// absent).
func (h *Hub) RemoveModule(ctx context.Context, module string) error {
	err := h.RemoveIdentity(ctx, h.deviceID+"/"+module)
	if fault.Is(err, fault.NotFound) {
		return nil
	}
	return err
}

// SendC2D delivers a cloud-to-device message to a connected device that
// subscribed to devices/<id>/messages/devicebound/#. The hub relays C2D,
// it does not store it (as edgeHub): fault.NotFound when not connected.
// props may hold system properties by name (messageId, correlationId,
// contentType, ...) or $.-wire name; the rest are application properties.
func (h *Hub) SendC2D(ctx context.Context, device string, body []byte, props map[string]string) error {
	id := h.ids.get(device)
	switch {
	case id == nil:
		return fault.New(fault.NotFound, "device %q does not exist", device)
	case id.Kind != KindDevice:
		return fault.New(fault.Invalid, "%q is a %s, not a device: cloud-to-device messages go to devices", device, id.Kind)
	}
	v, ok := h.byID.Load(id.Name)
	if !ok {
		return fault.New(fault.NotFound, "device %s is not connected", device)
	}
	s := v.(*session)
	app, sys := splitProps(props)
	topic := azure.C2DTopic(id.Device, app, sys)
	qos, sub := subscribedQoS(s, topic)
	if !sub {
		return fault.New(fault.NotFound, "device %s is connected but not subscribed to cloud-to-device messages", device)
	}
	h.stats.c2d.Add(1)
	if qos == 0 {
		return sendTo(s.cl, topic, body)
	}
	acked := make(chan bool, 1)
	if err := s.sendQoS1(topic, body, func() { acked <- true }, func() { acked <- false }); err != nil {
		return fault.New(fault.NotFound, "device %s is not connected: %v", device, err)
	}
	t := time.NewTimer(h.cfg.MethodTimeout)
	defer t.Stop()
	select {
	case ok := <-acked:
		if !ok {
			return fault.New(fault.Unavailable, "device %s disconnected before acknowledging", device)
		}
		return nil
	case <-t.C:
		return fault.New(fault.Timeout, "device %s did not acknowledge within %s", device, h.cfg.MethodTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// splitProps sorts a flat property map into application and system
// properties.
func splitProps(props map[string]string) (app, sys map[string]string) {
	for k, v := range props {
		name := k
		if strings.HasPrefix(k, "$.") {
			a, s, _ := azure.ParseBag(k + "=x")
			if len(s) == 1 {
				for n := range s {
					name = n
				}
			} else if len(a) == 1 {
				name = ""
			}
		}
		if name != "" && azure.WireName(name) != "" {
			if sys == nil {
				sys = map[string]string{}
			}
			sys[name] = v
			continue
		}
		if app == nil {
			app = map[string]string{}
		}
		app[k] = v
	}
	return app, sys
}

// Publish sends a message from an in-process module (a pipeline) on its
// output, through the same routes as container modules:
// source /messages/modules/<module>/outputs/<output>. It returns once the
// message is committed to the queue (or no route took it).
func (h *Hub) Publish(ctx context.Context, module, output string, body []byte, props map[string]string) error {
	if module == "" || output == "" || strings.ContainsAny(module+output, "/#+") {
		return fault.New(fault.Invalid, "publish: module %q and output %q must be non-empty names without / # +", module, output)
	}
	if len(body) > h.cfg.MaxMessageBytes {
		h.stats.drop(dropTooLarge)
		return fault.New(fault.TooLarge, "publish: body %d bytes, over %d", len(body), h.cfg.MaxMessageBytes)
	}
	app, sys := splitProps(props)
	if sys == nil {
		sys = map[string]string{}
	}
	sys["connectionDeviceId"] = h.deviceID
	sys["connectionModuleId"] = module
	sys["outputName"] = output
	m := &route.Message{Source: "/messages/modules/" + module + "/outputs/" + output, Body: body, App: app, Sys: sys}
	h.stats.received.Add(1)
	errc := make(chan error, 1)
	h.route(m, func(err error) { errc <- err })
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// RouteSpec is a route as the agent hands it (the manifest's $edgeHub
// routes); the same shape as RouteConfig.
type RouteSpec = RouteConfig

// StoreSettings are the manifest's storeAndForwardConfiguration.
type StoreSettings struct {
	TimeToLiveSecs int64 `json:"timeToLiveSecs"` // default TTL; 0 keeps the configured one, negative: never
	// MaxSizeBytes is the byte quota of the queues (storeLimits.maxSizeBytes
	// in Azure manifests); nil or 0 keeps the configured one.
	MaxSizeBytes *int64 `json:"maxSizeBytes,omitempty"`
}

// ValidateRoutes checks a route table without applying it: each error
// names the route and the position.
func (h *Hub) ValidateRoutes(routes map[string]RouteSpec) error {
	_, err := buildTable(routes)
	return err
}

func buildTable(routes map[string]RouteSpec) (*route.Table, error) {
	specs := make(map[string]route.Spec, len(routes))
	for n, r := range routes {
		specs[n] = route.Spec{Route: r.Route, Priority: r.Priority, TimeToLiveSecs: r.TimeToLiveSecs}
	}
	t, err := route.NewTable(specs)
	if err != nil {
		return nil, fault.Wrap(fault.Invalid, err)
	}
	return t, nil
}

// SetRoutes validates and swaps in a new route table; messages already
// queued keep their priority and TTL. A bad table changes nothing.
func (h *Hub) SetRoutes(routes map[string]RouteSpec) error {
	t, err := buildTable(routes)
	if err != nil {
		return err
	}
	h.routes.Store(t)
	h.log.Info("routes set", "count", len(routes))
	return nil
}

// SetStoreAndForward applies the manifest's store-and-forward settings.
func (h *Hub) SetStoreAndForward(s StoreSettings) error {
	ttl := h.cfg.StoreAndForward.TimeToLive
	switch {
	case s.TimeToLiveSecs < 0:
		ttl = 0
	case s.TimeToLiveSecs > 0:
		ttl = time.Duration(s.TimeToLiveSecs) * time.Second
	}
	h.defaults.Store(&storeDefaults{ttl: ttl})
	quota := h.cfg.StoreAndForward.QuotaBytes
	if s.MaxSizeBytes != nil && *s.MaxSizeBytes > 0 {
		quota = *s.MaxSizeBytes
	}
	h.store.SetQuota(quota)
	return nil
}

// dropSession ends a session for good (its identity was removed): its
// subscriptions and queued messages go, in mochi and in the database.
func (h *Hub) dropSession(s *session) {
	cl := s.cl
	h.sessions.Delete(cl)
	h.release(cl.ID, s)
	if cur, ok := h.srv.Clients.Get(cl.ID); ok && cur == cl {
		h.srv.UnsubscribeClient(cl)
		cl.ClearInflights()
		h.srv.Clients.Delete(cl.ID)
	}
	if h.persist.known(cl.ID) {
		h.persist.forget(cl.ID)
	}
}
