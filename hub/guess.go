package hub

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// guessLimiter bounds password guessing against plain MQTT users, whose
// passwords people choose and the hub checks with bcrypt (tens of
// milliseconds of CPU each). SAS tokens, X.509 certificates and module
// passwords are keys, not guessable, and cost nothing to check: they are
// not limited.
//
//   - Per address (IPv4, or the /64 of IPv6, which one host holds whole)
//     and user name: after guessFree wrong passwords in a row, further
//     attempts are refused without a check for 30 s, doubling to at most
//     5 min. A right password clears it.
//   - In all: at most guessGlobalBurst failures at once, then one every
//     guessGlobalEvery, so many addresses cannot guess faster either.
//   - One bcrypt check at a time: guessing cannot take more than one core
//     from the pipelines.
//
// Each attempt is reserved (counted as a failure) before its check, inside
// the one-at-a-time section, so attempts sent at once are counted as they
// are checked. Nothing is kept across restarts, and every lockout ends:
// a device cannot be shut out for good. Safe for concurrent use.
type guessLimiter struct {
	one   chan struct{} // one bcrypt check at a time
	free  int           // guessFree (tests make it smaller: bcrypt is slow under the race detector)
	burst float64       // guessGlobalBurst (likewise)

	mu      sync.Mutex // guards the fields below
	keys    map[string]*guessState
	tokens  float64   // failures allowed now, in all
	filled  time.Time // when tokens was last refilled
	warnedG bool      // the appliance-wide limit was logged since it last refilled

	checked atomic.Uint64 // bcrypt checks made (tests)
	pending atomic.Int64  // attempts waiting for or holding the one check (tests)
}

type guessState struct {
	failures int
	until    time.Time
}

const (
	guessFree         = 10
	guessFirstLockout = 30 * time.Second
	guessMaxLockout   = 5 * time.Minute
	guessGlobalBurst  = 30
	guessGlobalEvery  = 3 * time.Second
)

func newGuessLimiter() *guessLimiter {
	return &guessLimiter{one: make(chan struct{}, 1), free: guessFree, burst: guessGlobalBurst, keys: map[string]*guessState{}, tokens: guessGlobalBurst}
}

// setLimits changes the free failures and the burst (tests).
func (l *guessLimiter) setLimits(free, burst int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.free, l.burst, l.tokens = free, float64(burst), float64(burst)
}

// locked reports how long key must still wait, without reserving.
func (l *guessLimiter) locked(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.keys[key]; st != nil && now.Before(st.until) {
		return st.until.Sub(now)
	}
	return 0
}

// begin reserves an attempt for key. When key, or every key, must wait,
// it returns how long and whether the limit is the appliance-wide one,
// and reserves nothing.
func (l *guessLimiter) begin(key string, now time.Time) (wait time.Duration, global bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.keys[key]
	if st != nil && now.Before(st.until) {
		return st.until.Sub(now), false
	}
	if !l.filled.IsZero() {
		l.tokens = min(l.burst, l.tokens+float64(now.Sub(l.filled))/float64(guessGlobalEvery))
	}
	l.filled = now
	if l.tokens < 1 {
		return time.Duration((1 - l.tokens) * float64(guessGlobalEvery)), true
	}
	l.tokens--
	if st == nil {
		if len(l.keys) > 10000 { // bound memory under a spray of addresses and names
			for k, v := range l.keys {
				if now.After(v.until) {
					delete(l.keys, k)
				}
			}
		}
		st = &guessState{}
		l.keys[key] = st
	}
	st.failures++
	if st.failures >= l.free {
		d := guessFirstLockout << min(st.failures-l.free, 10)
		st.until = now.Add(min(d, guessMaxLockout))
	}
	return 0, false
}

// succeeded clears key after the right password and gives its
// reservation back.
func (l *guessLimiter) succeeded(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.keys, key)
	l.tokens = min(l.burst, l.tokens+1)
}

// lockedOut reports whether key's last failure started its lockout.
func (l *guessLimiter) lockedOut(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.keys[key]
	return st != nil && st.failures == l.free
}

// warnGlobal reports whether the appliance-wide limit should be logged
// now: once each time it runs out, again only after it refilled.
func (l *guessLimiter) warnGlobal(exhausted bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !exhausted {
		if l.tokens >= l.burst-1 {
			l.warnedG = false
		}
		return false
	}
	if l.warnedG {
		return false
	}
	l.warnedG = true
	return true
}

// guessKey is what the limiter counts an attempt by: the client's IPv4
// address or IPv6 /64, and the user name it tries.
func guessKey(remote, user string) string {
	return addrOf(remote) + " " + strings.ToLower(user)
}

// noUserHash is checked against when the user does not exist, so that a
// refusal takes as long whether the name exists or not.
var noUserHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("no such user"), bcrypt.DefaultCost)
	return h
})

// checkNoUser spends what checking a password of an existing user does.
func checkNoUser(pass []byte) { bcrypt.CompareHashAndPassword(noUserHash(), pass) }
