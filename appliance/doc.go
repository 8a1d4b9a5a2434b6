// Package appliance is ledge's root: it loads ledge.yaml, owns the data
// directory and the one SQLite database, builds every component (hub,
// model store, pipeline engine, agent, web), wires them to each other
// through the small interfaces they declare, and runs them.
//
// Wiring: each component's adapters live in the file named after it:
// the hub (hub.go) gives the agent identities, twins, routes and the
// upstream (agent_hub.go) and pipelines a publisher; the model store
// resolves pipelines' model names and activates versions through the
// engine's two-step model swap (models_pipeline.go); the agent owns
// deployments, and hands their pipelines and models sections to the
// engine and the store (pipeline_wiring.go, models.go); web gets every
// component through its own interfaces and response types (webtypes.go
// converts, and its test checks that no field's JSON is lost).
//
// Lifecycle: [App.Run] starts components in a fixed order (hub, models,
// pipelines, pipeline history, agent, event forwarding, web, health), each
// as a Run(ctx) error in its own goroutine, and stops them in reverse
// order when its context ends or any component fails, giving all of them
// together at most Config.ShutdownTimeout (5 s by default). Set-up that
// can fail (listening sockets, opening the database) happens in [New],
// before anything runs, so a bad config changes nothing.
//
// It is the only package that imports every component and the SQLite
// driver; only cmd/ledge imports it.
package appliance
