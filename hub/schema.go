package hub

// migrations are the hub's tables (component "hub"), append-only. The
// store-and-forward queue has its own ("hub-queue", package store).
var migrations = []string{
	`CREATE TABLE hub_identities (
		name          TEXT PRIMARY KEY COLLATE NOCASE,
		kind          TEXT NOT NULL,
		device        TEXT NOT NULL,
		module        TEXT NOT NULL,
		primary_key   TEXT NOT NULL,
		secondary_key TEXT NOT NULL,
		password_hash BLOB,
		thumbprint    TEXT NOT NULL,
		x509_ca       INTEGER NOT NULL,
		enabled       INTEGER NOT NULL,
		managed_by    TEXT NOT NULL,
		created       TEXT NOT NULL
	)`,
	`CREATE TABLE hub_twins (
		name             TEXT PRIMARY KEY COLLATE NOCASE,
		desired          TEXT NOT NULL,
		desired_version  INTEGER NOT NULL,
		reported         TEXT NOT NULL,
		reported_version INTEGER NOT NULL
	)`,
	// Persistent MQTT sessions (sessionStore): the session and who holds
	// it, its subscriptions, the messages queued for it in order, and
	// retained messages.
	`CREATE TABLE hub_sessions (
		client_id TEXT PRIMARY KEY,
		data      BLOB NOT NULL
	);
	CREATE TABLE hub_session_subs (
		client_id TEXT NOT NULL,
		filter    TEXT NOT NULL,
		data      BLOB NOT NULL,
		PRIMARY KEY (client_id, filter)
	);
	CREATE TABLE hub_session_msgs (
		seq       INTEGER PRIMARY KEY,
		client_id TEXT NOT NULL,
		packet_id INTEGER NOT NULL,
		data      BLOB NOT NULL,
		UNIQUE (client_id, packet_id)
	);
	CREATE TABLE hub_retained (
		topic TEXT PRIMARY KEY,
		data  BLOB NOT NULL
	)`,
	// A device's parent: the edge device (a child ledge) that may connect
	// to this hub on its behalf (IoT Hub's parent scope).
	`ALTER TABLE hub_identities ADD COLUMN parent TEXT NOT NULL DEFAULT ''`,
	// The packet ids of a persistent session's QoS 2 publishes the hub has
	// PUBREC'd and not yet seen the PUBREL of: after a restart, the client
	// sending one again is answered with PUBREC and the message is not
	// delivered twice (exactly once across kill -9, as mosquitto keeps them).
	`CREATE TABLE hub_session_rcvd (
		client_id TEXT NOT NULL,
		packet_id INTEGER NOT NULL,
		PRIMARY KEY (client_id, packet_id)
	)`,
}
