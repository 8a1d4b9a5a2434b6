// Package workload serves Azure IoT Edge's workload API (reference §5.2)
// to container modules, so modules built on the Azure IoT SDKs run
// unchanged in edge mode (ModuleClient.fromEnvironment): they sign their
// SAS tokens, fetch the trust bundle and ask for server certificates
// here, and never see their identity key.
//
// Each module gets its own socket, <dir>/<module>/workload.sock; the
// agent bind-mounts the folder <dir>/<module> read-only at
// /var/run/iotedge in the module's container (IOTEDGE_WORKLOADURI =
// unix:///var/run/iotedge/workload.sock). A folder rather than the
// socket file, so that the socket made again after ledge restarts is
// the one the running container sees. A socket answers only for its
// module: a request naming another module is refused (403), and the
// generation id in the path must be the module identity's current one
// (the hub checks it again when it signs). The folder is 0700 and the
// socket 0666: only the container it is mounted into (and root) reaches
// it.
//
// Routes (HTTP/1.1, every one with ?api-version= a known version):
//
//	GET  /trust-bundle                                    {"certificate": PEM}
//	POST /modules/{name}/genid/{genid}/sign               {"keyId","algo":"HMACSHA256","data"} -> {"digest"}
//	POST /modules/{name}/genid/{genid}/certificate/server {"commonName","expiration"} -> {"privateKey":{"type":"key","bytes"},"certificate","expiration"}
//
// A server certificate is issued only for the module's own name (its
// alias on the module network), so no module can pose as the hub or as
// another module. Errors are {"message": "..."} with a 4xx or 5xx
// status. At most 10 connections per socket are served at once (as
// aziot-edged); more are closed at once and the SDKs retry.
//
// The crypto is not here: [Keys] (the hub's identities and CA, wired by
// appliance) signs and issues. A [Server] is safe for concurrent use.
package workload
