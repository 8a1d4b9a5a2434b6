// Package pipeline will hold ledge's vision pipeline engine: pipeline
// specs, the graph engine, sources (capture with gocv), the detect stage
// (the only place that uses package inference), motion gate, zones,
// tracker, events, actions and per-stage metrics.
package pipeline
