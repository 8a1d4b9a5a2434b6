package web

import "time"

// The model store's JSON, as the API answers it (openapi.json: Model,
// ModelVersion, ModelProgress).

// Model is everything the store knows about one model name.
type Model struct {
	Name string `json:"name"`
	// Active is the version pipelines get ("" when none).
	Active      string    `json:"active,omitempty"`
	ActivatedAt time.Time `json:"activatedAt,omitzero"`
	// Desired is the version the current deployment asks for.
	Desired string `json:"desired,omitempty"`
	// Pinned: the active version was chosen by hand.
	Pinned bool `json:"pinned,omitempty"`
	// Versions are newest first.
	Versions []ModelVersion `json:"versions"`
}

// ModelVersion is one stored version of a model.
type ModelVersion struct {
	Name        string   `json:"name"`
	Version     string   `json:"version"`
	Digest      string   `json:"digest"` // SHA-256 of the file, hex
	Size        int64    `json:"size"`
	Kind        string   `json:"kind,omitempty"`
	Labels      []string `json:"labels,omitempty"`
	InputWidth  int      `json:"inputWidth,omitempty"`
	InputHeight int      `json:"inputHeight,omitempty"`
	URL         string   `json:"url"`
	Signer      string   `json:"signer,omitempty"`
	// State is queued, downloading, verifying, ready, activating, active
	// or failed (Error says why).
	State       string         `json:"state"`
	Error       string         `json:"error,omitempty"`
	CreatedAt   time.Time      `json:"createdAt"`
	ReadyAt     time.Time      `json:"readyAt,omitzero"`
	ActivatedAt time.Time      `json:"activatedAt,omitzero"`
	Path        string         `json:"path,omitempty"`
	Progress    *ModelProgress `json:"progress,omitempty"`
}

// ModelProgress is a download's progress.
type ModelProgress struct {
	Bytes   int64   `json:"bytes"`
	Total   int64   `json:"total,omitempty"`   // 0 while unknown
	Percent float64 `json:"percent"`           // -1 while the total is unknown
	Rate    float64 `json:"rate"`              // bytes a second, recently
	Attempt int     `json:"attempt"`           // from 1
	Resumed int64   `json:"resumed,omitempty"` // the offset this attempt resumed from
}
