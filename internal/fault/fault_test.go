package fault

import (
	"errors"
	"fmt"
	"io"
	"testing"
)

func TestKinds(t *testing.T) {
	err := New(NotFound, "pipeline %q not found", "cam1")
	if KindOf(err) != NotFound || err.Error() != `pipeline "cam1" not found` {
		t.Errorf("%v %q", KindOf(err), err)
	}
	wrapped := fmt.Errorf("reload: %w", err)
	if !Is(wrapped, NotFound) || Is(wrapped, Invalid) {
		t.Error("kind lost through wrapping")
	}
	cause := New(Invalid, "bad spec: %w", io.EOF)
	if !errors.Is(cause, io.EOF) || cause.Error() != "bad spec: EOF" {
		t.Errorf("%q does not wrap EOF", cause)
	}
	if KindOf(errors.New("x")) != Internal || Wrap(Timeout, nil) != nil || KindOf(Wrap(Timeout, io.EOF)) != Timeout {
		t.Error("internal / wrap")
	}
}
