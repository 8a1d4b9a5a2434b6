package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"go.yaml.in/yaml/v3"
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

// coInput is a module's createOptions as written: text (joined chunks,
// with where each chunk starts) or an object.
type coInput struct {
	text   string
	chunks []coChunk
	node   *yaml.Node // an object written in place of the stringified JSON
	given  bool
}

type coChunk struct {
	key   string
	start int // offset of its first character in text
}

// where names a place (a byte offset) in the createOptions text, counting
// from 1 as people do: "character 25 of the createOptions value", and the
// chunk when there are several.
func (in *coInput) where(off int) string {
	s := fmt.Sprintf("character %d of the createOptions value", off+1)
	if len(in.chunks) > 1 {
		for i := len(in.chunks) - 1; i >= 0; i-- {
			if c := in.chunks[i]; off >= c.start {
				s += fmt.Sprintf(", character %d of %s", off-c.start+1, c.key)
				break
			}
		}
	}
	return s
}

// readCreateOptions reads a module's createOptions as edgeAgent does and
// returns them canonical: Json.NET's reading (comments, trailing commas,
// single quotes; strings, numbers and booleans converted for the fields
// edgeAgent's own model has, see edgeAgentConverts), then the Docker
// engine's for the fields edgeAgent passes on as written. Unknown fields
// are dropped with a warning. Problems are recorded at path (the
// createOptions key).
func readCreateOptions(src *source, in *coInput, path []string, ps *problems) json.RawMessage {
	root := in.node
	place := func(n *yaml.Node) string {
		if in.node != nil {
			return ""
		}
		return " (at " + in.where(n.Column-1) + ")"
	}
	if root == nil {
		trimmed := strings.TrimSpace(in.text)
		if trimmed == "" || strings.EqualFold(trimmed, "null") {
			return json.RawMessage("{}")
		}
		if ps.coBudget == nil {
			b := maxCreateOptionsValues
			ps.coBudget = &b
		}
		n, off, msg := parseJSONNet(in.text, ps.coBudget)
		if msg != "" {
			ps.at(path, "invalid createOptions: %s at %s (near %q)", msg, in.where(off), near(in.text, off))
			return nil
		}
		root = n
	}
	if root.Kind != yaml.MappingNode {
		ps.at(path, "createOptions must be a JSON object (Docker's ContainerCreate body), got %s", describeNode(root))
		return nil
	}
	before := len(ps.list)
	z := &normalizer{
		tag:  "json",
		conv: edgeAgentConverts,
		problem: func(warn bool, p []string, n *yaml.Node, msg string) {
			text := msg + place(n)
			if len(p) > 0 {
				text = renderPath(p) + ": " + text
			}
			var e *Error
			if in.node != nil {
				e = src.nodeError(n, path, text)
			} else {
				e = &Error{Path: renderPath(path), Offset: -1, Msg: text}
				src.locate(e, path)
			}
			if warn {
				ps.addWarning(e)
			} else {
				ps.add(e)
			}
		},
		quiet: ps.quiet,
		unknown: func(parent, key, suggestion string) string {
			msg := "not a field of Docker's ContainerCreate body: ignored (edgeAgent passes it on and the Docker engine ignores it)"
			if home := fieldHome(parent, key); home != "" {
				msg += fmt.Sprintf("; %s belongs %s", key, home)
			} else if suggestion != "" {
				msg += fmt.Sprintf("; did you mean %q?", suggestion)
			}
			return msg
		},
	}
	if !z.walk(root, reflect.TypeFor[CreateOptions](), nil, "") || len(ps.list) > before {
		return nil
	}
	canon, err := canonicalNode(root)
	if err != nil {
		ps.at(path, "invalid createOptions: %v", err)
		return nil
	}
	if _, err := DecodeCreateOptions(canon); err != nil {
		ps.at(path, "invalid createOptions: %s", createOptionsError(canon, err))
		return nil
	}
	return canon
}

// fieldHome says where a createOptions field written at the wrong one of
// the two levels people mix up belongs: a HostConfig field at the top
// ("Privileged", "Binds") or a top-level one in HostConfig ("Env",
// "ExposedPorts"). Empty when key is not such a field.
func fieldHome(parent, key string) string {
	has := func(t reflect.Type) bool {
		for _, f := range fieldsOf(t, "json").list {
			if strings.EqualFold(f.name, key) {
				return true
			}
		}
		return false
	}
	switch parent {
	case "":
		if has(reflect.TypeFor[container.HostConfig]()) {
			return "in HostConfig"
		}
	case "HostConfig":
		if has(reflect.TypeFor[container.Config]()) {
			return "at the top level of createOptions, not in HostConfig"
		}
	}
	return ""
}

func createOptionsError(text []byte, err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("%v at character %d of the createOptions value (near %q)", se, se.Offset, near(string(text), int(se.Offset)))
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "(top level)"
		}
		return fmt.Sprintf("field %s: got a JSON %s, want %s", field, te.Value, goTypeName(te.Type.String()))
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return "unexpected end of the createOptions JSON"
	}
	return strings.TrimPrefix(err.Error(), "json: ")
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

func near(text string, off int) string {
	lo, hi := max(0, off-12), min(len(text), off+12)
	lo = min(lo, hi)
	return text[lo:hi]
}

// edgeAgentModel lists the createOptions fields edgeAgent's own model
// classes have (edge-agent/.../Docker/models/*.cs): Json.NET converts
// strings, numbers and booleans for them (then writes them with their
// type). Every other field goes to the Docker engine as written, which
// reads it with encoding/json. Paths use Docker's field names, "*" for a
// map key and "[]" for an array item.
var edgeAgentModel = func() map[string]bool {
	m := map[string]bool{}
	add := func(prefix string, names ...string) {
		for _, n := range names {
			m[joinCanon(prefix, n)] = true
		}
	}
	add("", "Env.[]", "ExposedPorts.*", "Image", "Labels.*")
	add("HostConfig", "Binds.[]", "LogConfig.Type", "LogConfig.Config.*", "NetworkMode", "IpcMode",
		"Privileged", "CpuRealtimePeriod", "CpuQuota", "CpuPeriod", "BlkioWeight", "CgroupParent", "NanoCpus",
		"Memory", "CpuShares", "CpuRealtimeRuntime", "CpusetCpus", "CpusetMems", "KernelMemory", "MemoryReservation",
		"MemorySwap", "MemorySwappiness", "OomKillDisable", "PidsLimit", "CpuCount", "CpuPercent", "IOMaximumIOps",
		"IOMaximumBandwidth", "Isolation", "ConsoleSize.[]", "Runtime", "Sysctls.*", "RestartPolicy.Name",
		"RestartPolicy.MaximumRetryCount", "AutoRemove", "VolumeDriver", "VolumesFrom.[]", "CapAdd.[]", "CapDrop.[]",
		"Dns.[]", "DnsOptions.[]", "DnsSearch.[]", "Init", "ExtraHosts.[]", "Cgroup", "Links.[]", "OomScoreAdj",
		"PidMode", "PublishAllPorts", "ReadonlyRootfs", "SecurityOpt.[]", "StorageOpt.*", "Tmpfs.*", "UTSMode",
		"UsernsMode", "ShmSize", "GroupAdd.[]")
	add("HostConfig.Mounts.[]", "ReadOnly", "Source", "Target", "Type")
	add("HostConfig.PortBindings.*.[]", "HostIp", "HostPort")
	for _, d := range []string{"BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps"} {
		add("HostConfig."+d+".[]", "Path", "Rate")
	}
	add("HostConfig.BlkioWeightDevice.[]", "Path", "Weight")
	add("HostConfig.Devices.[]", "PathOnHost", "PathInContainer", "CgroupPermissions")
	add("HostConfig.Ulimits.[]", "Name", "Hard", "Soft")
	add("NetworkingConfig.EndpointsConfig.*", "Aliases.[]")
	return m
}()

func edgeAgentConverts(canon string) conversion {
	if edgeAgentModel[canon] {
		return convJSONNet
	}
	return convGo
}

// chunkKey says whether a settings key is read as a createOptions chunk
// by edgeAgent, and its number text: edgeAgent's pattern
// (?i:createoptions)(?<num>[0-9]*) is not anchored, so any key holding
// "createOptions" counts.
func chunkKey(k string) (num string, ok bool) {
	i := strings.Index(strings.ToLower(k), "createoptions")
	if i < 0 {
		return "", false
	}
	rest := k[i+len("createoptions"):]
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	return rest[:j], true
}

// maxCreateOptionsValues bounds the values in all the createOptions of
// one manifest together (a real one has a few dozen per module), so a
// hostile manifest cannot make the parser build millions of nodes.
const maxCreateOptionsValues = 50_000

// maxChunks is how many chunks edgeAgent reads (TwinValueMaxChunks); it
// ignores any after them.
const maxChunks = 100

// joinChunks reads the createOptions chunks of an Azure settings object
// as edgeAgent does (JsonEx.ChunkedValue): every key holding
// "createOptions", sorted by name ignoring case, the first named without
// a number and then 01, 02 ... in order (a gap is an error naming the
// missing chunk), at most 100, each value read as text. It returns the
// input and the path of the first chunk, or given false when there is
// none.
func joinChunks(src *source, settings *yaml.Node, path []string, ps *problems) (*coInput, []string) {
	type chunk struct {
		key, num string
		key0     *yaml.Node
		val      *yaml.Node
	}
	var chunks []chunk
	for i := 0; i+1 < len(settings.Content); i += 2 {
		k, v := settings.Content[i], settings.Content[i+1]
		if num, ok := chunkKey(k.Value); ok {
			chunks = append(chunks, chunk{k.Value, num, k, v})
		}
	}
	if len(chunks) == 0 {
		return &coInput{}, nil
	}
	sort.SliceStable(chunks, func(i, j int) bool { return strings.ToUpper(chunks[i].key) < strings.ToUpper(chunks[j].key) })
	keyPath := with(path, chunks[0].key)
	if len(chunks) > maxChunks {
		ps.warn(with(path, chunks[maxChunks].key), "%d createOptions chunks: edgeAgent reads the first %d and ignores the rest, and so does ledge", len(chunks), maxChunks)
		chunks = chunks[:maxChunks]
	}
	in := &coInput{given: true}
	var b strings.Builder
	for i, c := range chunks {
		cp := with(path, c.key)
		switch {
		case i == 0 && c.num != "":
			ps.at(cp, "the first createOptions chunk must be named createOptions (no number), then createOptions01, createOptions02 ...: got %q first", c.key)
			return nil, nil
		case i > 0:
			n, err := strconv.Atoi(c.num)
			switch {
			case c.num == "" || err != nil:
				ps.at(cp, "%q is read as a createOptions chunk (edgeAgent reads every key holding \"createOptions\" as one) but has no chunk number: name chunks createOptions01, createOptions02 ...", c.key)
				return nil, nil
			case n != i:
				ps.at(cp, "createOptions%02d is missing: %q follows %q (edgeAgent refuses a gap in the chunks)", i, c.key, chunks[i-1].key)
				return nil, nil
			}
		}
		if c.num != "" && c.key != fmt.Sprintf("createOptions%s", c.num) && !strings.EqualFold(c.key, "createOptions"+c.num) {
			ps.warn(cp, "%q is read as createOptions chunk %s", c.key, c.num)
		}
		if c.val.Kind == yaml.MappingNode && len(chunks) == 1 {
			// Templates let authors write an object; edgeAgent takes its text.
			in.node = c.val
			return in, keyPath
		}
		in.chunks = append(in.chunks, coChunk{key: c.key, start: b.Len()})
		switch {
		case c.val.Kind == yaml.ScalarNode:
			switch c.val.ShortTag() {
			case "!!str":
				b.WriteString(c.val.Value)
			case "!!null":
			case "!!bool":
				b.WriteString(dotNetBool(c.val.Value))
			default:
				b.WriteString(c.val.Value)
			}
		case c.val.Kind == yaml.MappingNode || c.val.Kind == yaml.SequenceNode:
			canon, err := canonicalNode(c.val)
			if err != nil {
				ps.at(cp, "%v", err)
				return nil, nil
			}
			b.Write(canon)
		default:
			ps.at(cp, "a createOptions chunk must be a string (stringified JSON)")
			return nil, nil
		}
	}
	in.text = b.String()
	return in, keyPath
}
