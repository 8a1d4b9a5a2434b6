package detect

import (
	"runtime"
	"syscall"
)

// swapNice is the nice value model swaps load and warm at: a pipeline that
// keeps the cores busy still gets them while a new model is prepared
// beside the one serving.
const swapNice = 19

// atLowPriority runs f on an OS thread of its own at nice swapNice and
// waits for it. The thread is never given back to the Go scheduler (the
// goroutine exits locked to it, which ends the thread), so nothing else
// runs at that priority. Threads ONNX Runtime starts from f inherit it.
func atLowPriority(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// Best effort: without the right to lower it, f runs as it is.
		_ = syscall.Setpriority(syscall.PRIO_PROCESS, syscall.Gettid(), swapNice)
		f()
	}()
	<-done
}
