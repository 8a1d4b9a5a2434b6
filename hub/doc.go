// Package hub is ledge's embedded MQTT hub: a broker on mochi-mqtt (MQTT
// 3.1.1 and 5) that speaks the Azure IoT Hub device and module API
// (reference azure-iot-edge.md §3, §4, §6) so IoT Hub SDK devices and
// modules connect to it unchanged, and is a plain MQTT broker for simple
// devices at the same time.
//
// What it owns:
//   - listeners: TCP, TLS (a CA and server certificate generated into
//     <dataDir>/hub on first start, renewed before expiry), and MQTT over
//     WebSocket at /$iothub/websocket ([Hub.WebSocketHandler], mounted by
//     web; optionally on its own port, which also serves module-to-module
//     direct methods over HTTPS as edgeHub does, m2m.go);
//   - identities in SQLite (hub_identities): devices and modules with two
//     symmetric keys (SAS tokens verified over the raw sr text, expiry,
//     audience, both keys), X.509 client certificates (CA-signed or by
//     thumbprint), and users with bcrypt-hashed passwords; in dev mode
//     anonymous clients from loopback;
//   - the ACL: an identity publishes and subscribes only its own
//     devices/<id>/... and $iothub/... topics; plain topics follow
//     Config.ACL;
//   - the dialect: telemetry and module outputs with property bags, module
//     inputs, C2D ([Hub.SendC2D]), twins in hub_twins with $version and
//     the 32 KB limits ([Hub.GetTwin], [Hub.PatchDesired],
//     [Hub.SetDesired]), direct methods ([Hub.InvokeMethod]);
//   - routes (package route's grammar) swapped whole through an
//     atomic.Pointer ([Hub.SetRoutes], [Hub.ValidateRoutes]);
//   - store-and-forward (package store): a QoS 1 telemetry PUBACK is sent
//     only after the message is committed; one pump per endpoint delivers
//     to the module's connection or upstream with back-off 1 s to 60 s;
//   - the upstream bridge (paho): a generic broker with a topic template,
//     or IoT Hub device mode (a parent ledge works as IoT Hub), plus
//     [Hub.PublishUpstream] and [Hub.SubscribeUpstream] for the agent;
//   - the parent as a full parent (parent.go, azure mode with relay): a
//     connection per identity it acts for (the agent's $edgeAgent,
//     $edgeHub and $ledge twins: [Hub.WatchParentTwins],
//     [Hub.ReportParentTwin]; every device and module connected here:
//     methods, C2D and desired properties down, reported up); as a
//     parent, a device's key authenticates its modules and a device
//     connects on behalf of those whose parent it is (sasKeys);
//   - the workload API's keys ([Hub.ModuleSign], [Hub.TrustBundle],
//     [Hub.ModuleServerCertificate]);
//   - counters through [Hub.Stats], which appliance turns into metrics.
//
// Interfaces for other components: [Hub.Publish] has the shape of the
// pipeline's Publisher (an in-process module publishing on an output);
// the agent uses [Hub.EnsureModule] (keys, SAS connection string, plain
// MQTT username/password, generation id), [Hub.RemoveModule],
// [Hub.SetModuleDesired], [RoutesFromJSON] with [Hub.ValidateRoutes],
// [Hub.PlanRoutes] and [Hub.SetRoutes], [StoreSettingsFromJSON] with
// [Hub.SetStoreAndForward], [Hub.CAPath], [Hub.Hostname],
// [Hub.IoTHubHostname], [Hub.Ports], [Hub.PublishUpstream] and
// [Hub.SubscribeUpstream]; web uses [Hub.Stats], the identity, twin,
// method and C2D methods, and [Hub.WebSocketHandler].
//
// Concurrency: every exported method of Hub is safe for concurrent use.
// mochi calls the hooks from each client's read goroutine; the per-client
// session is immutable after CONNECT except its pending-ack map (its own
// mutex). Routes and store defaults are atomic snapshots. Twins are
// read-modify-written under one mutex. New binds the sockets; Run serves
// until its context ends, then closes listeners and clients, stops the
// pumps and the bridge, and lets the queue commit what it holds.
package hub
