package pipeline

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/warthog618/go-gpiocdev"
)

// GPIOLine is an output line requested from a GPIO chip.
type GPIOLine interface {
	SetValue(v int) error
	Close() error
}

// GPIOOpener requests line offset of chip as an output, initially
// inactive. The default uses the Linux GPIO character device.
type GPIOOpener func(chip string, offset int, activeLow bool) (GPIOLine, error)

// DefaultGPIOPulse is how long a gpio action drives its line by default.
const DefaultGPIOPulse = 500 * time.Millisecond

// OpenGPIOLine requests a line through the GPIO character device
// (/dev/gpiochipN) with go-gpiocdev.
func OpenGPIOLine(chip string, offset int, activeLow bool) (GPIOLine, error) {
	opts := []gpiocdev.LineReqOption{gpiocdev.AsOutput(0), gpiocdev.WithConsumer("ledge")}
	if activeLow {
		opts = append(opts, gpiocdev.AsActiveLow)
	}
	l, err := gpiocdev.RequestLine(strings.TrimPrefix(chip, "/dev/"), offset, opts...)
	if err != nil {
		return nil, fmt.Errorf("gpio %s line %d: %w", chip, offset, err)
	}
	return l, nil
}

// gpioAction drives a line active for a pulse. The line is requested at
// the first event (a missing chip is an action failure, counted and
// retried, not a pipeline failure) and kept.
type gpioAction struct {
	open      GPIOOpener
	chip      string
	offset    int
	activeLow bool
	pulse     time.Duration

	mu   sync.Mutex // guards line
	line GPIOLine
}

func newGPIOAction(s ActionSpec, open GPIOOpener) *gpioAction {
	a := &gpioAction{open: open, chip: s.Chip, offset: s.Line, activeLow: s.ActiveLow, pulse: s.Pulse}
	if a.chip == "" {
		a.chip = "gpiochip0"
	}
	if a.pulse == 0 {
		a.pulse = DefaultGPIOPulse
	}
	if a.open == nil {
		a.open = OpenGPIOLine
	}
	return a
}

func (a *gpioAction) do(ctx context.Context, e *Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.line == nil {
		l, err := a.open(a.chip, a.offset, a.activeLow)
		if err != nil {
			return err
		}
		a.line = l
	}
	if err := a.line.SetValue(1); err != nil {
		a.line.Close()
		a.line = nil
		return fmt.Errorf("gpio %s line %d: %w", a.chip, a.offset, err)
	}
	t := time.NewTimer(a.pulse)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
	}
	// The line always goes back to inactive, even when ctx ended.
	if err := a.line.SetValue(0); err != nil {
		a.line.Close()
		a.line = nil
		return fmt.Errorf("gpio %s line %d: %w", a.chip, a.offset, err)
	}
	return nil
}

func (a *gpioAction) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.line != nil {
		a.line.SetValue(0)
		a.line.Close()
		a.line = nil
	}
}
