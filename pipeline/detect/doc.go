// Package detect is the detect stage of ledge's pipelines: it turns a
// detect.model (a file, or a name the model store resolves) into a shared
// ONNX Runtime detector and runs it on frames. It is the one package of
// the pipeline engine that imports package inference; the engine sees
// detections as [Detection] (inference's own type) and nothing else of it.
//
// A [Pool] shares detectors between stages, reference-counted by what
// makes them different (file, kind, labels, session layout); it loads a
// model without holding its lock, so other stages acquire and release
// while a slow model loads, and a load can be abandoned when its context
// ends. A [Stage] holds its current model behind an atomic pointer; a new
// version is loaded and warmed beside it ([Stage.Prepare]) and switched
// in between two frames ([Swap.Commit]), or released ([Swap.Abort]).
//
// Concurrency: Pool is safe for concurrent use. A Stage's Detect, Due and
// Ready are called by the one goroutine that processes its frames;
// Prepare, Info, Waiting and a Swap's Commit and Abort may be called from
// any goroutine. gocv.Mat values passed in are only read.
package detect
