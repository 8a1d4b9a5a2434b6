// Package fleet is IoT Hub's automatic device management on an MQTT broker
// the user already runs: deployments targeted by a condition over device
// tags and reported properties, resolved by priority, rolled out in waves
// with a soak time and an abort threshold, and the controller that does it.
// The broker holds every piece of state as retained messages (topic
// layout in topics.go and docs/fleet.md); a controller keeps nothing of its
// own, so another can take over at any moment.
//
// It lives in hub because it is the hub's dialect one level up (IoT Hub
// deployments), speaks MQTT through paho like the upstream bridge, and
// evaluates target conditions with the route language (hub/route,
// [route.ParseTwinQuery]). It imports no other ledge component: signing
// definitions and sealing manifests for devices (the agent's ed25519
// envelopes and version rule) come in through [Signer], [Verifier] and
// [Sealer], which cmd/ledge wires from the agent.
//
// Concurrency: a [Conn] keeps a retained-message [View] updated from
// paho's goroutines under its own lock; readers take snapshots. A
// [Controller]'s Run is one goroutine; it acts only while it holds the
// lease ([Lease]). Its decisions are functions of the broker's state
// (wave membership is a stable hash order) but for the version a device
// is given, which comes from its clock: two controllers that both
// believed they held the lease would give a device its deployment twice.
// The view therefore never takes a publish of its own over a newer
// message on the topic ([Conn.Publish]).
package fleet
