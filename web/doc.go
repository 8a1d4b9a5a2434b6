// Package web is ledge's HTTP face: /healthz, Prometheus /metrics, the
// REST API under /api/v1, server-sent events (/api/v1/events/stream), the
// live feed (one WebSocket carrying the frames of every camera a page
// shows, live.go), MJPEG streams, MQTT over WebSocket for the hub, and the
// embedded dashboard (pages.go). HTTPS speaks HTTP/2.
//
// One gin engine serves the listeners: TCP (default :8080) for the LAN,
// HTTPS beside it when the hub provides a certificate, and a unix socket in
// the data directory (mode 0600) through which the ledge CLI talks to the
// running daemon; whoever can open the socket is the machine's
// administrator. Over TCP the API needs a session (the dashboard's login)
// or an API token; in dev mode loopback clients need neither (auth.go).
//
// The API's JSON is web's own: each resource has a small interface that
// returns web's response types (types_*.go), and appliance adapts the
// components to them. openapi.json documents every route and, under
// components.schemas, every response type field by field; openapi_test.go
// keeps the routes, the schemas and the types in step. Errors carry
// internal/fault kinds, which one place (respondErr) maps to a status and
// a message; an internal error is logged with an id and not shown.
//
// web imports no other component, only the helpers under internal/: it
// declares the interfaces it needs (see [Options]; a nil one makes its
// routes answer 503) and appliance hands it the implementations.
//
// Concurrency: handlers run concurrently; Server's methods are called once
// each, in the order New, Run.
package web
