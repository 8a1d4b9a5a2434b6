package inference

import (
	"errors"
	"fmt"
	"os"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// DefaultLibrary is where `make deps` installs the ONNX Runtime shared
// library. Packaged builds set it at link time (`make cross`: -X
// ledge/inference.DefaultLibrary=/usr/lib/ledge/libonnxruntime.so.1).
var DefaultLibrary = "/usr/local/lib/ledge/libonnxruntime.so.1"

// LibraryEnv names the environment variable that overrides the library path.
const LibraryEnv = "LEDGE_ORT_LIB"

// ErrLibraryMissing is returned by [Open] when the ONNX Runtime shared
// library is not where it was looked for.
var ErrLibraryMissing = errors.New("onnx runtime library not found")

// Runtime is the process-wide ONNX Runtime environment. It is safe for
// concurrent use.
type Runtime struct {
	library string
	version string
}

var (
	// envMu guards env and envRefs: ONNX Runtime allows one environment per
	// process, shared by every Runtime handle.
	envMu   sync.Mutex
	env     *Runtime
	envRefs int
)

// ResolveLibrary returns the library path to load: $LEDGE_ORT_LIB when set,
// else configured when not empty, else [DefaultLibrary].
func ResolveLibrary(configured string) string {
	if p := os.Getenv(LibraryEnv); p != "" {
		return p
	}
	if configured != "" {
		return configured
	}
	return DefaultLibrary
}

// Open loads ONNX Runtime from library (see [ResolveLibrary]) and returns the
// process's Runtime. Later calls return the same environment; a different
// library path after the first load is an error. Each successful Open must be
// paired with a Close.
func Open(library string) (*Runtime, error) {
	library = ResolveLibrary(library)
	envMu.Lock()
	defer envMu.Unlock()
	if env != nil {
		if env.library != library {
			return nil, fmt.Errorf("onnx runtime already loaded from %s, cannot load %s too", env.library, library)
		}
		envRefs++
		return env, nil
	}
	if _, err := os.Stat(library); err != nil {
		return nil, fmt.Errorf("%w at %s: run `make deps` (or deploy/deps.sh) to install it, or point %s / inference.library in ledge.yaml at libonnxruntime.so", ErrLibraryMissing, library, LibraryEnv)
	}
	ort.SetSharedLibraryPath(library)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return nil, fmt.Errorf("load onnx runtime %s: %w", library, err)
	}
	env = &Runtime{library: library, version: ort.GetVersion()}
	envRefs = 1
	return env, nil
}

// Version is the ONNX Runtime version string, e.g. "1.24.3".
func (r *Runtime) Version() string { return r.version }

// Library is the path the library was loaded from.
func (r *Runtime) Library() string { return r.library }

// Close releases this handle; the environment is destroyed with the last one.
func (r *Runtime) Close() error {
	envMu.Lock()
	defer envMu.Unlock()
	if env != r || envRefs == 0 {
		return nil
	}
	envRefs--
	if envRefs > 0 {
		return nil
	}
	env = nil
	return ort.DestroyEnvironment()
}
