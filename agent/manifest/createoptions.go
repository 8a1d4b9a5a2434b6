package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"gopkg.in/yaml.v3"
)

// CreateOptions is the body of Docker's ContainerCreate call, as Azure's
// createOptions carries it: container Config fields at the top level, plus
// HostConfig and NetworkingConfig.
type CreateOptions struct {
	container.Config
	HostConfig       *container.HostConfig     `json:",omitempty"`
	NetworkingConfig *network.NetworkingConfig `json:",omitempty"`
}

// DecodeCreateOptions decodes a module's canonical createOptions.
func DecodeCreateOptions(data []byte) (*CreateOptions, error) {
	var co CreateOptions
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&co); err != nil {
		return nil, err
	}
	return &co, nil
}

// parseCreateOptions checks createOptions JSON text against Docker's types
// and returns it canonical, or a message saying what is wrong and at which
// character of the createOptions value.
func parseCreateOptions(text []byte) (json.RawMessage, string) {
	trimmed := bytes.TrimSpace(text)
	if len(trimmed) == 0 {
		return []byte("{}"), ""
	}
	if trimmed[0] != '{' {
		return nil, "createOptions must be a JSON object (Docker's ContainerCreate body)"
	}
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.DisallowUnknownFields()
	var co CreateOptions
	if err := dec.Decode(&co); err != nil {
		return nil, "invalid createOptions: " + createOptionsError(text, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Sprintf("invalid createOptions: unexpected data after the JSON object at character %d", dec.InputOffset())
	}
	canon, err := canonicalJSON(text)
	if err != nil {
		return nil, "invalid createOptions: " + err.Error()
	}
	return canon, ""
}

func createOptionsError(text []byte, err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("%v at character %d of the createOptions value (near %q)", se, se.Offset, near(text, int(se.Offset)))
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "(top level)"
		}
		return fmt.Sprintf("field %s: got a JSON %s, want %s (at character %d of the createOptions value)", field, te.Value, goTypeName(te.Type.String()), te.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return "unexpected end of the createOptions JSON"
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if strings.HasPrefix(msg, "unknown field") {
		return msg + " (not a field of Docker's ContainerCreate body: Config fields, HostConfig or NetworkingConfig)"
	}
	return msg
}

func goTypeName(t string) string {
	switch {
	case strings.HasPrefix(t, "[]"), strings.HasSuffix(t, "StrSlice"):
		return "an array"
	case strings.HasPrefix(t, "map["), strings.HasPrefix(t, "nat.Port"):
		return "an object"
	case t == "string" || strings.HasSuffix(t, "Mode") || strings.HasSuffix(t, "Isolation"):
		return "a string"
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"), strings.HasPrefix(t, "float"):
		return "a number"
	case t == "bool", t == "*bool":
		return "true or false"
	}
	return t
}

func near(text []byte, off int) string {
	lo, hi := max(0, off-12), min(len(text), off+12)
	return string(text[lo:hi])
}

// createOptionsChunk matches Azure's chunk names, case-insensitively:
// createOptions, createOptions01 ... createOptions99.
var createOptionsChunk = regexp.MustCompile(`(?i)^createoptions[0-9]*$`)

// joinChunks concatenates the createOptions chunks of an Azure settings
// object the way edgeAgent does (JsonEx.ChunkedValue): every key matching
// createOptions[0-9]* case-insensitively, sorted ordinally, at most 100.
// It returns nil when there are none; a chunk that is not a string is an
// error.
func joinChunks(settings *yaml.Node, path []string, ps *problems) (text []byte, keyPath []string) {
	type chunk struct {
		key string
		val *yaml.Node
	}
	var chunks []chunk
	for i := 0; i+1 < len(settings.Content); i += 2 {
		k, v := settings.Content[i], settings.Content[i+1]
		if createOptionsChunk.MatchString(k.Value) {
			chunks = append(chunks, chunk{k.Value, v})
		}
	}
	if len(chunks) == 0 {
		return nil, nil
	}
	// Order by the digits after the name (edgeAgent's named group), so
	// createOptions < createOptions01 < ... whatever the case of the name.
	suffix := func(k string) string { return k[len("createOptions"):] }
	sort.Slice(chunks, func(i, j int) bool { return suffix(chunks[i].key) < suffix(chunks[j].key) })
	for i := 1; i < len(chunks); i++ {
		if suffix(chunks[i].key) == suffix(chunks[i-1].key) {
			ps.at(with(path, chunks[i].key), "createOptions chunk %q given twice (%q and %q: names are case-insensitive)",
				"createOptions"+suffix(chunks[i].key), chunks[i-1].key, chunks[i].key)
			return nil, nil
		}
	}
	keyPath = with(path, chunks[0].key)
	if len(chunks) > 100 {
		ps.at(keyPath, "%d createOptions chunks: at most 100 (createOptions, createOptions01 ... createOptions99)", len(chunks))
		return nil, nil
	}
	var b bytes.Buffer
	for _, c := range chunks {
		switch {
		case c.val.Kind == yaml.ScalarNode && c.val.ShortTag() == "!!str":
			b.WriteString(c.val.Value)
		case c.val.Kind == yaml.MappingNode && len(chunks) == 1:
			// Templates let authors write an object; accept it too.
			canon, err := canonicalNode(c.val)
			if err != nil {
				ps.at(with(path, c.key), "%v", err)
				return nil, nil
			}
			return canon, keyPath
		default:
			ps.at(with(path, c.key), "a createOptions chunk must be a string (stringified JSON)")
			return nil, nil
		}
	}
	return b.Bytes(), keyPath
}
