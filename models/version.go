package models

import (
	"crypto/ed25519"
	"time"
)

// State is where a version of a model is.
type State string

// States. queued, downloading, verifying, ready and failed are stored;
// activating and active are what a ready version is while it is being
// loaded and warmed, and once it serves.
const (
	StateQueued      State = "queued"      // waiting for a download slot (or for the network)
	StateDownloading State = "downloading" // bytes arriving
	StateVerifying   State = "verifying"   // checking the digest and signature
	StateReady       State = "ready"       // stored and verified, not in use
	StateActivating  State = "activating"  // being loaded and warmed
	StateActive      State = "active"      // the version pipelines get for its name
	StateFailed      State = "failed"      // see Error; never activated
)

// Version is one stored version of a model.
type Version struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Digest is the file's SHA-256 in hex; the file is stored under it.
	Digest string `json:"digest"`
	// Size is the file's size in bytes (the expected one until it is
	// downloaded; 0 when unknown).
	Size        int64    `json:"size"`
	Kind        string   `json:"kind,omitempty"`
	Labels      []string `json:"labels,omitempty"`
	InputWidth  int      `json:"inputWidth,omitempty"`
	InputHeight int      `json:"inputHeight,omitempty"`
	URL         string   `json:"url"`
	// Signer is the id of the trusted key whose signature was verified,
	// "" when none was.
	Signer string `json:"signer,omitempty"`
	State  State  `json:"state"`
	// Error says why the version failed.
	Error       string    `json:"error,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
	ReadyAt     time.Time `json:"readyAt,omitzero"`
	ActivatedAt time.Time `json:"activatedAt,omitzero"`
	// Path is the stored file, set when the version is ready.
	Path string `json:"path,omitempty"`
	// Progress is the transfer, while downloading.
	Progress *Progress `json:"progress,omitempty"`

	signature string // as given, JSON; for re-checks
}

// Ref is "name@version".
func (v *Version) Ref() string { return v.Name + "@" + v.Version }

// Model is everything the store knows about one name.
type Model struct {
	Name string `json:"name"`
	// Active is the version pipelines get ("" when none).
	Active      string    `json:"active,omitempty"`
	ActivatedAt time.Time `json:"activatedAt,omitzero"`
	// Desired is the version the current deployment asks for ("" when the
	// deployment does not list the name).
	Desired string `json:"desired,omitempty"`
	// Pinned is set when the active version was chosen by hand (`ledge
	// models activate` or rollback): a deployment that keeps the same entry
	// for this name leaves it; one that changes the entry wins.
	Pinned bool `json:"pinned,omitempty"`
	// Versions are newest first.
	Versions []Version `json:"versions"`
}

// Progress is a transfer's progress.
type Progress struct {
	Bytes int64 `json:"bytes"`
	// Total is the file's size, 0 when not known yet.
	Total int64 `json:"total,omitempty"`
	// Percent is Bytes/Total*100, -1 when Total is unknown.
	Percent float64 `json:"percent"`
	// Rate is the recent transfer rate in bytes per second.
	Rate float64 `json:"rate"`
	// Attempt counts tries, from 1; a retry resumes where the last broke.
	Attempt int `json:"attempt"`
	// Resumed is the offset the current attempt resumed from.
	Resumed int64 `json:"resumed,omitempty"`
}

// TrustedKey is a public key model signatures may be made with (the
// agent's trusted keys, handed over by appliance).
type TrustedKey struct {
	ID  string
	Key ed25519.PublicKey
}
