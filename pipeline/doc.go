// Package pipeline is ledge's vision pipeline engine: camera capture, ONNX
// detection, a motion gate, zones, tracking, events and actions, run in
// process and observed live.
//
// A pipeline is described by a [Spec] (under pipelines: in ledge.yaml, or in
// a deployment manifest; see [ParseSpecs] and [ValidateSpecs]). The
// [Engine] builds and runs the pipelines of a set of specs; [Engine.Apply]
// replaces the whole set at runtime: every spec is validated and every new
// or changed pipeline built before anything changes, unchanged pipelines
// keep running untouched, and a changed one is reloaded (build new, start
// new, swap, stop old). Detectors are shared and reference-counted by what
// makes them different (model file, kind, session layout), so a model used by
// several pipelines, or kept across a reload, is loaded once.
//
// Each pipeline runs three stages, each a goroutine: capture (package
// source) puts frames into a one-frame mailbox where the newest frame wins
// (drops are counted) for live sources, or where capture waits for a file
// read as fast as it is consumed; process runs the motion gate, the detect
// stage (package detect, the only one here that imports package
// inference), zones and the tracker, and turns tracks into events (one per tracked
// object, track.start/update/end, plus the raw enter and leave stream);
// dispatch takes
// events from a bounded queue (overflow is counted), writes the snapshot
// and the event log, notifies subscribers and queues the event to each
// action, which has its own bounded queue, retries and counters.
//
// Models: a detect.model names a file or a model in the model store
// ([ModelResolver]). The store switches a name to a new version in two
// steps: [Engine.PrepareModel] loads and warms it in every pipeline on the
// name while they keep serving the old one, and the [ModelSwap] it returns
// is committed (the pipelines switch between two frames) once the store
// has recorded the version, or aborted.
//
// Observation: [Engine.Stats] gives per-stage counters and latency
// percentiles; [Engine.Watch] yields annotated JPEG frames, encoded only
// while somebody watches; [Engine.Subscribe] yields events through a
// bounded channel per subscriber. [EventLog] stores events in SQLite with
// retention by age and by total snapshot bytes.
//
// Concurrency: Engine methods are safe for concurrent use. A gocv.Mat is
// owned by the stage holding the frame; where one is created it is said who
// closes it.
package pipeline
