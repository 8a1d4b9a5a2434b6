// Package appliance is ledge's root: it loads ledge.yaml, owns the data
// directory and the one SQLite database, builds every component (web, and in
// later steps hub, agent, pipelines, models), wires them to each other
// through the small interfaces they declare, and runs them.
//
// Lifecycle: [App.Run] starts components in a fixed order, each as a
// Run(ctx) error in its own goroutine, and stops them in reverse order when
// its context ends or any component fails, giving all of them together at
// most Config.ShutdownTimeout (5 s by default). Set-up that can fail
// (listening sockets, opening the database) happens in [New], before
// anything runs, so a bad config changes nothing.
//
// It is the only package that imports every component and the SQLite
// driver; only cmd/ledge imports it.
package appliance
