// Package inference runs ONNX object detectors and classifiers on video
// frames with ONNX Runtime.
//
// One [Runtime] per process wraps ONNX Runtime's environment (the library is
// loaded once; see [Open]). A [Detector] is built from a model file and a
// [Kind] that names its adapter: the pre-processing (letterbox or plain
// resize, channel order, scaling) and the decoder of its output tensors. With
// [KindAuto] the adapter is picked from the model's input and output shapes
// and its metadata, and [Detector.Kind] says which was chosen.
//
// Detections are returned in source-image pixels after class-aware
// non-maximum suppression.
//
// Concurrency: a Detector is safe for concurrent use. It owns a small pool of
// ONNX Runtime sessions (up to Options.Sessions, default 1), each with its
// own pre-allocated input and output tensors and scratch image; a call to
// [Detector.Detect] takes one session from the pool for its whole duration,
// so calls beyond the pool size wait their turn. The pool starts with one
// session and grows, in the background, only when a call finds every
// session busy: a model that one pipeline uses never pays for the memory of
// a second session. On a machine with N cores, N sessions of one intra-op
// thread give the best throughput and one session of N threads the lowest
// latency.
//
// Caveats: gocv.Mat values passed in are only read; the caller keeps
// ownership. Close a Detector only after every Detect call has returned.
package inference
