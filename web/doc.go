// Package web is ledge's HTTP face: health and Prometheus metrics, the
// REST API under /api/v1, server-sent events, the live feed (one WebSocket
// carrying the frames of every camera a page shows, live.go), MJPEG
// streams and the embedded dashboard. HTTPS speaks HTTP/2.
//
// One gin engine serves two listeners: TCP (default :8080) for the LAN, and
// a unix socket in the data directory (mode 0600) through which the ledge
// CLI talks to the running daemon; whoever can open the socket is the
// machine's administrator.
//
// web imports no other ledge package: it declares the small interfaces it
// needs (see [Options]) and appliance hands it the implementations.
//
// Concurrency: handlers run concurrently; Server's methods are called once
// each, in the order New, Run.
package web
