package hub

import (
	"encoding/binary"
	"errors"
	"sort"

	"ledge/hub/route"
)

// encodeMessage writes a routed message as the store keeps it: source,
// body, then application and system properties, each length-prefixed.
func encodeMessage(m *route.Message) []byte {
	n := 16 + len(m.Source) + len(m.Body)
	for k, v := range m.App {
		n += len(k) + len(v) + 4
	}
	for k, v := range m.Sys {
		n += len(k) + len(v) + 4
	}
	b := make([]byte, 0, n)
	b = appendString(b, m.Source)
	b = appendString(b, string(m.Body))
	b = appendMap(b, m.App)
	b = appendMap(b, m.Sys)
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendMap(b []byte, m map[string]string) []byte {
	b = binary.AppendUvarint(b, uint64(len(m)))
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b = appendString(b, k)
		b = appendString(b, m[k])
	}
	return b
}

var errCorrupt = errors.New("corrupt queued message")

func decodeMessage(b []byte) (*route.Message, error) {
	d := decoder{b: b}
	m := &route.Message{Source: d.str()}
	m.Body = []byte(d.str())
	m.App = d.m()
	m.Sys = d.m()
	if d.err {
		return nil, errCorrupt
	}
	return m, nil
}

type decoder struct {
	b   []byte
	err bool
}

func (d *decoder) str() string {
	n, k := binary.Uvarint(d.b)
	if k <= 0 || uint64(len(d.b)-k) < n {
		d.err = true
		d.b = nil
		return ""
	}
	s := string(d.b[k : k+int(n)])
	d.b = d.b[k+int(n):]
	return s
}

func (d *decoder) m() map[string]string {
	n, k := binary.Uvarint(d.b)
	if k <= 0 || n > uint64(len(d.b)) {
		d.err = true
		return nil
	}
	d.b = d.b[k:]
	if n == 0 {
		return nil
	}
	m := make(map[string]string, n)
	for range n {
		key := d.str()
		m[key] = d.str()
		if d.err {
			return nil
		}
	}
	return m
}
