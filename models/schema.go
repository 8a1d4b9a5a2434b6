package models

// migrations are the store's tables (component "models" of
// internal/migrate), append-only. Times are Unix milliseconds (0: never).
var migrations = []string{
	// 1: versions, names (active and desired), activation history.
	`CREATE TABLE models_versions (
		name         TEXT    NOT NULL,
		version      TEXT    NOT NULL,
		digest       TEXT    NOT NULL,
		size         INTEGER NOT NULL DEFAULT 0,
		kind         TEXT    NOT NULL DEFAULT '',
		labels       TEXT    NOT NULL DEFAULT '',
		input_width  INTEGER NOT NULL DEFAULT 0,
		input_height INTEGER NOT NULL DEFAULT 0,
		url          TEXT    NOT NULL,
		signature    TEXT    NOT NULL DEFAULT '',
		signer       TEXT    NOT NULL DEFAULT '',
		state        TEXT    NOT NULL,
		error        TEXT    NOT NULL DEFAULT '',
		created_at   INTEGER NOT NULL,
		ready_at     INTEGER NOT NULL DEFAULT 0,
		activated_at INTEGER NOT NULL DEFAULT 0,
		PRIMARY KEY (name, version)
	);
	CREATE INDEX models_versions_digest ON models_versions (digest);
	CREATE TABLE models_names (
		name         TEXT    PRIMARY KEY,
		active       TEXT    NOT NULL DEFAULT '',
		activated_at INTEGER NOT NULL DEFAULT 0,
		desired      TEXT    NOT NULL DEFAULT '',
		desired_spec TEXT    NOT NULL DEFAULT '',
		pinned       INTEGER NOT NULL DEFAULT 0
	);
	CREATE TABLE models_activations (
		id      INTEGER PRIMARY KEY AUTOINCREMENT,
		name    TEXT    NOT NULL,
		version TEXT    NOT NULL,
		at      INTEGER NOT NULL,
		reason  TEXT    NOT NULL
	);
	CREATE INDEX models_activations_name ON models_activations (name, id)`,
	// 2: a version pulled with "activate" is activated once ready, after a
	// restart too (the pull was acknowledged).
	`ALTER TABLE models_versions ADD COLUMN activate_when_ready INTEGER NOT NULL DEFAULT 0`,
}
