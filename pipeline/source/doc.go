// Package source captures video frames for ledge's pipelines with gocv
// (OpenCV): V4L2 devices, RTSP and HTTP(S) streams (MJPEG included), video
// files (optionally looped and paced at their own frame rate), image
// folders or globs, and a built-in test pattern of moving shapes.
//
// A [Spec] names the source by URL; [Spec.Validate] checks it without
// touching the device. [Run] opens the source, hands frames to a [Sink] and
// reopens it with capped exponential back-off when it fails; a finite
// source (a file or image set without loop) that ends is "ended" and stays
// so. Its [State] (connecting, streaming, backoff with the reason, ended) is
// published through a callback.
//
// Concurrency: Run owns its reader and calls the Sink from one goroutine. A
// Mat handed to Sink.Put belongs to the sink from then on. Schemes are
// registered at init; Register panics on a duplicate.
package source
