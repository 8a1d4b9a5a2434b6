package inference

import (
	"flag"
	"os"
	"testing"

	"ledge/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// testRuntime is the process's ONNX Runtime, opened once for all tests.
var testRuntime *Runtime

func runtimeFor(t testing.TB) *Runtime {
	t.Helper()
	if testRuntime == nil {
		rt, err := Open(testenv.ORTLib(t))
		if err != nil {
			t.Fatalf("open onnx runtime: %v", err)
		}
		testRuntime = rt
	}
	return testRuntime
}

func TestMain(m *testing.M) {
	code := m.Run()
	if testRuntime != nil {
		testRuntime.Close()
	}
	os.Exit(code)
}
