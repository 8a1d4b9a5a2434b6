package route

import (
	"encoding/binary"
	"unicode/utf16"
)

// props builds a property map from key, value pairs.
func props(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// jsonMsg is a module output with a JSON body, declared as such.
func jsonMsg(body string, app ...string) *Message {
	return &Message{
		Source: "/messages/modules/cam/outputs/alerts",
		Body:   []byte(body),
		App:    props(app...),
		Sys:    props("contentType", "application/json", "contentEncoding", "utf-8"),
	}
}

// withSys returns m with its system properties replaced.
func withSys(m *Message, kv ...string) *Message {
	c := *m
	c.Sys = props(kv...)
	return &c
}

func utf16LE(s string, bom bool) []byte {
	var out []byte
	if bom {
		out = append(out, 0xff, 0xfe)
	}
	for _, u := range utf16.Encode([]rune(s)) {
		out = binary.LittleEndian.AppendUint16(out, u)
	}
	return out
}

func utf16BE(s string) []byte {
	out := []byte{0xfe, 0xff}
	for _, u := range utf16.Encode([]rune(s)) {
		out = binary.BigEndian.AppendUint16(out, u)
	}
	return out
}

func utf32LE(s string) []byte {
	var out []byte
	for _, r := range s {
		out = binary.LittleEndian.AppendUint32(out, uint32(r))
	}
	return out
}
