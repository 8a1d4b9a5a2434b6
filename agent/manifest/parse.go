package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"

	"ledge/internal/yamlstrict"
)

// MaxSize bounds a manifest's size in bytes.
const MaxSize = 1 << 20

// Parse reads a deployment manifest: native YAML, native JSON, or an Azure
// IoT Edge modulesContent manifest, found where the Azure CLI finds it
// (see [azureDeployment]). A document whose first significant
// character is '{' is read as JSON, with comments and trailing commas
// allowed (see [StandardizeJSONC]); anything else as YAML.
//
// The error, when there is one, is an [Errors] list naming each problem's
// field path and its line, column and (JSON) byte offset. The sections
// other components own (pipelines, routes' text, models) are checked only
// for their shape here; their owners validate them.
func Parse(data []byte) (*Manifest, error) {
	if len(data) > MaxSize {
		return nil, Errors{{Offset: -1, Msg: fmt.Sprintf("manifest is %d bytes, over the limit of %d", len(data), MaxSize)}}
	}
	src, err := parseDocument(data)
	if err != nil {
		return nil, err
	}
	root := src.root.Content[0]
	for root.Kind == yaml.AliasNode && root.Alias != nil {
		root = root.Alias
	}
	if root.Kind != yaml.MappingNode {
		return nil, Errors{src.nodeError(root, nil, "a manifest is a mapping (JSON object) at the top level")}
	}
	ps := &problems{src: src}
	var m *Manifest
	if holder, base, key, mc := azureDeployment(root); mc != nil {
		ignoreAroundAzure(src, root, holder, key, ps)
		if key == deprecatedContentKey {
			ps.warn(with(base, key), "%q is the deprecated spelling of %q (the Azure CLI still reads it, with a warning)", key, modulesContentKey)
		}
		m = parseAzure(src, mc, with(base, key), ps)
	} else if content := child(root, "content"); content != nil && len(root.Content) == 2 {
		ps.add(src.nodeError(content, []string{"content"}, `want "modulesContent" inside "content"`))
		return nil, ps.err()
	} else {
		m = parseNative(src, root, ps)
	}
	if err := ps.err(); err != nil {
		return nil, err
	}
	if src.json && m.Format != FormatAzure {
		m.Format = FormatJSON
	}
	m.Warnings = append(m.Warnings, ps.warnings...)
	return m, nil
}

// parseDocument finds the format and builds the node tree.
func parseDocument(data []byte) (*source, error) {
	if isJSON(data) {
		std, err := StandardizeJSONC(stripBOM(data))
		src := newSource(data, true)
		if err != nil {
			var e *Error
			if errors.As(err, &e) {
				e.Line, e.Column = src.position(e.Offset)
			}
			return nil, Errors{e}
		}
		root, err := parseJSONNode(src, std)
		if err != nil {
			return nil, Errors{err.(*Error)}
		}
		src.root = root
		return src, checkSize(src)
	}
	src := newSource(data, false)
	if n := yamlSeparators(data); n > 2*maxNodes {
		return nil, Errors{{Offset: -1, Msg: fmt.Sprintf("document has more than %d values (%d separators)", maxNodes, n)}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, Errors{{Offset: -1, Msg: "empty manifest"}}
		}
		return nil, Errors{yamlSyntax(err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, Errors{{Line: extra.Line, Offset: -1, Msg: "more than one YAML document ('---'): a manifest is one document"}}
	} else if !errors.Is(err, io.EOF) {
		return nil, Errors{yamlSyntax(err)}
	}
	if len(doc.Content) == 0 {
		return nil, Errors{{Offset: -1, Msg: "empty manifest"}}
	}
	src.root = &doc
	return src, checkSize(src)
}

// yamlSeparators counts what may separate YAML values (',', ':', '-',
// newlines): an upper bound on the values a document can hold, known
// before yaml/v3 builds its tree, which it cannot be asked to bound.
func yamlSeparators(data []byte) int {
	n := 0
	for _, c := range data {
		switch c {
		case ',', ':', '-', '\n', '[', '{':
			n++
		}
	}
	return n
}

func checkSize(src *source) error {
	ps := &problems{src: src}
	n := 0
	checkTree(src, src.root, nil, 0, &n, ps)
	return ps.err()
}

func stripBOM(data []byte) []byte {
	if bytes.HasPrefix(data, []byte("\xef\xbb\xbf")) {
		out := bytes.Clone(data)
		copy(out, "   ")
		return out
	}
	return data
}

// isJSON reports whether the first significant character (after space,
// a BOM and JSONC comments) is '{' or '['.
func isJSON(data []byte) bool {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	for i := 0; i < len(data); i++ {
		switch c := data[i]; c {
		case ' ', '\t', '\r', '\n':
		case '/':
			if i+1 < len(data) && data[i+1] == '/' {
				for i < len(data) && data[i] != '\n' {
					i++
				}
			} else if i+1 < len(data) && data[i+1] == '*' {
				end := bytes.Index(data[i+2:], []byte("*/"))
				if end < 0 {
					return true // let the JSONC pass report it
				}
				i += 2 + end + 1
			} else {
				return false
			}
		default:
			return c == '{' || c == '['
		}
	}
	return false
}

func yamlSyntax(err error) *Error {
	var e *yamlstrict.Error
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if _, scanErr := fmt.Sscanf(msg, "line %d:", &line); scanErr == nil {
		msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
	}
	if errors.As(err, &e) {
		return &Error{Line: e.Line, Offset: -1, Msg: e.Msg}
	}
	return &Error{Line: line, Offset: -1, Msg: "invalid YAML: " + msg}
}

// decodeStrict decodes node into v with yamlstrict (unknown keys are
// errors with a suggestion), recording a failure in ps. path prefixes the
// error's field path.
func decodeStrict(src *source, n *yaml.Node, v any, path []string, ps *problems) bool {
	if err := yamlstrict.DecodeNode(n, v, renderPath(path)); err != nil {
		var ye *yamlstrict.Error
		if errors.As(err, &ye) {
			e := &Error{Path: ye.Path, Line: ye.Line, Column: ye.Column, Offset: -1, Msg: ye.Msg}
			if e.Line == 0 {
				e.Line, e.Column = n.Line, n.Column
			}
			e.Offset = src.offset(e.Line, e.Column)
			if e.Column == 0 {
				e.Offset = -1
			}
			ps.add(e)
		} else {
			ps.add(src.nodeError(n, path, err.Error()))
		}
		return false
	}
	return true
}

// rawNode keeps a node as it is, for the parts decoded later or handed on.
type rawNode struct{ n *yaml.Node }

func (r *rawNode) UnmarshalYAML(n *yaml.Node) error {
	r.n = n
	return nil
}

// isNull reports whether the node is absent or null.
func (r rawNode) isNull() bool {
	return r.n == nil || (r.n.Kind == yaml.ScalarNode && r.n.ShortTag() == "!!null")
}

func equalFold(a, b string) bool { return strings.EqualFold(a, b) }

const (
	modulesContentKey    = "modulesContent"
	deprecatedContentKey = "moduleContent"
)

// azureDeployment finds an Azure deployment where the Azure CLI does
// (az iot edge set-modules --content and az iot edge deployment create,
// azext_iot's _process_config_content): in the document's "content" when
// it has one (an IoT Hub configuration, as az iot edge deployment show
// prints it), else in the document; under "modulesContent", else under
// its deprecated spelling "moduleContent". It returns the object holding
// the deployment, that object's path, the key and the modulesContent
// node; mc is nil when there is none.
func azureDeployment(root *yaml.Node) (holder *yaml.Node, base []string, key string, mc *yaml.Node) {
	find := func(n *yaml.Node) (string, *yaml.Node) {
		if n == nil || n.Kind != yaml.MappingNode {
			return "", nil
		}
		for _, k := range []string{modulesContentKey, deprecatedContentKey} {
			if c := child(n, k); c != nil {
				return k, c
			}
		}
		return "", nil
	}
	if content := child(root, "content"); content != nil {
		if k, c := find(content); c != nil {
			return content, []string{"content"}, k, c
		}
	}
	if k, c := find(root); c != nil {
		return root, nil, k, c
	}
	return nil, nil, "", nil
}

// ignoreAroundAzure tells, as warnings, about the keys around an Azure
// deployment that the Azure CLI drops before IoT Hub (and edgeAgent) see
// it: the rest of an IoT Hub configuration around "content" (id, labels,
// targetCondition, priority, metrics ...), comments and other keys next
// to modulesContent. "$schema..." keys (written by the IoT Edge tools)
// and the empty moduleContent and deviceContent of a configuration pass
// silently. A non-empty deviceContent or moduleContent beside
// modulesContent is a device configuration, not a deployment: refused.
func ignoreAroundAzure(src *source, root, holder *yaml.Node, key string, ps *problems) {
	if holder != root {
		// One warning for the whole configuration around "content", at
		// its first key: az iot edge deployment show prints ten of them.
		var first *yaml.Node
		var others []string
		for i := 0; i+1 < len(root.Content); i += 2 {
			if k := root.Content[i]; k.Value != "content" && !strings.HasPrefix(k.Value, "$schema") {
				if first == nil {
					first = k
				} else {
					others = append(others, k.Value)
				}
			}
		}
		if first != nil {
			with := ""
			switch n := len(others); n {
			case 0:
			case 1:
				with = ", with " + others[0]
			default:
				with = ", with " + strings.Join(others[:n-1], ", ") + " and " + others[n-1]
			}
			ps.warnAt(first, []string{first.Value}, "ignored%s: ledge reads only \"content\" of an IoT Hub configuration, as the Azure CLI does", with)
		}
	}
	var base []string
	if holder != root {
		base = []string{"content"}
	}
	for i := 0; i+1 < len(holder.Content); i += 2 {
		k, v := holder.Content[i], holder.Content[i+1]
		switch {
		case k.Value == key || strings.HasPrefix(k.Value, "$schema"):
		case holder != root && (k.Value == "deviceContent" || k.Value == deprecatedContentKey):
			if !(v.Kind == yaml.MappingNode && len(v.Content) == 0) && !(v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null") {
				ps.add(src.nodeError(k, with(base, k.Value), fmt.Sprintf("%s beside %s is an automatic device configuration, not a deployment ledge applies: send the deployment alone", k.Value, key)))
			}
		default:
			ps.warnAt(k, with(base, k.Value), "unknown key next to %s, ignored (the Azure CLI drops it before IoT Hub sees the deployment)%s", key, didYouMean(k.Value, modulesContentKey))
		}
	}
}
