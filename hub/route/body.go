package route

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// jsonDoc is a message body decoded once per evaluation: UTF-8 JSON whose
// root is an object, or unusable.
type jsonDoc struct {
	state uint8 // 0: not looked at yet, 1: usable, 2: unusable
	data  []byte
}

const (
	docUnknown = iota
	docOK
	docBad
)

// bodyQuery evaluates $body.<path>. The body is only read when the message
// says contentType application/json and contentEncoding utf-8, utf-16 or
// utf-32 (case-insensitive); otherwise, or when the body is not a JSON
// object, the path is missing, or it names an object or an array, the
// result is undefined. JSON null is null.
func (c *evalCtx) bodyQuery(path []pathSeg) Value {
	if c.body.state == docUnknown {
		c.body.state = docBad
		ct, _ := lookupFold(c.m.Sys, SysContentType)
		enc, _ := lookupFold(c.m.Sys, SysContentEncoding)
		if strings.EqualFold(ct, "application/json") && isUTFEncoding(enc) {
			c.body.load(c.m.Body, enc)
		}
	}
	if c.body.state != docOK {
		return Value{}
	}
	raw, ok := lookupJSON(c.body.data, path)
	if !ok {
		return Value{}
	}
	return jsonValue(raw)
}

// twinChangeIncludes reports whether the twin change notification in the
// body changes the path: true when it is there and not null, false when it
// is null or missing, undefined when the body is not a JSON object.
func (c *evalCtx) twinChangeIncludes(path []pathSeg) Value {
	if c.twin.state == docUnknown {
		enc, _ := lookupFold(c.m.Sys, SysContentEncoding)
		c.twin.state = docBad
		c.twin.load(c.m.Body, enc)
	}
	if c.twin.state != docOK {
		return Value{}
	}
	raw, ok := lookupJSON(c.twin.data, path)
	return Bool(ok && string(raw) != "null")
}

// docQuery evaluates a bare name of a twin query: the JSON at that path
// of the body, whatever its content type (undefined when the body is not
// a JSON object or the path is missing, or names an object or array).
func (c *evalCtx) docQuery(path []pathSeg) Value {
	if c.twin.state == docUnknown {
		c.twin.state = docBad
		c.twin.load(c.m.Body, "utf-8")
	}
	if c.twin.state != docOK {
		return Value{}
	}
	raw, ok := lookupJSON(c.twin.data, path)
	if !ok {
		return Value{}
	}
	return jsonValue(raw)
}

func isUTFEncoding(enc string) bool {
	return strings.EqualFold(enc, "utf-8") || strings.EqualFold(enc, "utf-16") || strings.EqualFold(enc, "utf-32")
}

// load decodes body (UTF-16 and UTF-32 as little-endian unless a byte order
// mark says otherwise; anything else as UTF-8), drops a byte order mark and
// keeps it if it is valid JSON with an object at the root.
func (d *jsonDoc) load(body []byte, enc string) {
	var data []byte
	switch {
	case strings.EqualFold(enc, "utf-16"):
		data = decodeUTF16(body)
	case strings.EqualFold(enc, "utf-32"):
		data = decodeUTF32(body)
	default:
		data = body
		if len(data) >= 3 && data[0] == 0xef && data[1] == 0xbb && data[2] == 0xbf {
			data = data[3:]
		}
	}
	if data == nil || !json.Valid(data) {
		return
	}
	if i := skipWS(data, 0); data[i] != '{' {
		return
	}
	d.data, d.state = data, docOK
}

func decodeUTF16(b []byte) []byte {
	if len(b)%2 != 0 {
		return nil
	}
	big := false
	if len(b) >= 2 && b[0] == 0xfe && b[1] == 0xff {
		big, b = true, b[2:]
	} else if len(b) >= 2 && b[0] == 0xff && b[1] == 0xfe {
		b = b[2:]
	}
	units := make([]uint16, len(b)/2)
	for i := range units {
		if big {
			units[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
		} else {
			units[i] = uint16(b[2*i+1])<<8 | uint16(b[2*i])
		}
	}
	out := make([]byte, 0, len(units))
	for _, r := range utf16.Decode(units) {
		out = utf8.AppendRune(out, r)
	}
	return out
}

func decodeUTF32(b []byte) []byte {
	if len(b)%4 != 0 {
		return nil
	}
	big := false
	if len(b) >= 4 && b[0] == 0 && b[1] == 0 && b[2] == 0xfe && b[3] == 0xff {
		big, b = true, b[4:]
	} else if len(b) >= 4 && b[0] == 0xff && b[1] == 0xfe && b[2] == 0 && b[3] == 0 {
		b = b[4:]
	}
	out := make([]byte, 0, len(b)/4)
	for i := 0; i < len(b); i += 4 {
		var u uint32
		if big {
			u = uint32(b[i])<<24 | uint32(b[i+1])<<16 | uint32(b[i+2])<<8 | uint32(b[i+3])
		} else {
			u = uint32(b[i+3])<<24 | uint32(b[i+2])<<16 | uint32(b[i+1])<<8 | uint32(b[i])
		}
		r := rune(u)
		if u > utf8.MaxRune || !utf8.ValidRune(r) {
			r = utf8.RuneError
		}
		out = utf8.AppendRune(out, r)
	}
	return out
}

// jsonValue converts the raw JSON of a leaf to a Value; objects and arrays
// are undefined.
func jsonValue(raw []byte) Value {
	switch raw[0] {
	case '"':
		return String(jsonString(raw))
	case 't':
		return Bool(true)
	case 'f':
		return Bool(false)
	case 'n':
		return Null()
	case '{', '[':
		return Value{}
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); !ok || ne.Err != strconv.ErrRange {
			return Value{}
		}
	}
	return Number(f)
}

// The scanner below walks JSON already checked by json.Valid, so it only
// needs to find boundaries, not report errors.

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] == '"'.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// skipValue returns the index after the value starting at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
		i++
	}
	return i
}

// lookupJSON follows path from the root object of doc and returns the raw
// JSON of the value it names. Member names are case-sensitive; when an
// object repeats a name, the last one counts.
func lookupJSON(doc []byte, path []pathSeg) ([]byte, bool) {
	i := skipWS(doc, 0)
	for _, seg := range path {
		if doc[i] != '{' {
			return nil, false
		}
		found := -1
		i = skipWS(doc, i+1)
		for doc[i] != '}' {
			ks := i
			ke := skipString(doc, i)
			i = skipWS(doc, ke)
			i = skipWS(doc, i+1) // ':'
			if keyEquals(doc[ks+1:ke-1], seg.name) {
				found = i
			}
			i = skipWS(doc, skipValue(doc, i))
			if doc[i] == ',' {
				i = skipWS(doc, i+1)
			}
		}
		if found < 0 {
			return nil, false
		}
		i = found
		if seg.index >= 0 {
			if doc[i] != '[' {
				return nil, false
			}
			i = skipWS(doc, i+1)
			for n := 0; ; n++ {
				if doc[i] == ']' {
					return nil, false
				}
				if n == seg.index {
					break
				}
				i = skipWS(doc, skipValue(doc, i))
				if doc[i] == ',' {
					i = skipWS(doc, i+1)
				}
			}
		}
	}
	return doc[i:skipValue(doc, i)], true
}

func keyEquals(raw []byte, name string) bool {
	for _, c := range raw {
		if c == '\\' {
			return jsonString(append(append([]byte{'"'}, raw...), '"')) == name
		}
	}
	return string(raw) == name
}

// jsonString decodes a JSON string literal (valid, with its quotes).
func jsonString(raw []byte) string {
	body := raw[1 : len(raw)-1]
	esc := false
	for _, c := range body {
		if c == '\\' {
			esc = true
			break
		}
	}
	if !esc {
		return string(body)
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return string(body)
	}
	return s
}
