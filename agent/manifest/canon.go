package manifest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// canonicalNode converts a YAML or JSON node into canonical JSON: object
// keys sorted, no insignificant space, numbers as Go's encoding/json
// writes them. Two documents that mean the same give the same bytes,
// whichever format they were written in.
func canonicalNode(n *yaml.Node) (json.RawMessage, error) {
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return canonicalValue(v)
}

// canonicalValue encodes a decoded value (from YAML or encoding/json) as
// canonical JSON.
func canonicalValue(v any) (json.RawMessage, error) {
	v, err := jsonable(v, 0)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// jsonable turns what yaml/v3 decodes into what encoding/json can write.
func jsonable(v any, depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nested deeper than %d levels", maxDepth)
	}
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			e, err := jsonable(e, depth+1)
			if err != nil {
				return nil, err
			}
			x[k] = e
		}
		return x, nil
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			var ks string
			switch kk := k.(type) {
			case string:
				ks = kk
			case int, int64, uint64, float64, bool, nil:
				ks = fmt.Sprint(kk)
			default:
				return nil, fmt.Errorf("a mapping key must be a scalar, got %T", k)
			}
			if _, dup := out[ks]; dup {
				return nil, fmt.Errorf("keys %q collide once written as JSON strings", ks)
			}
			e, err := jsonable(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[ks] = e
		}
		return out, nil
	case []any:
		for i, e := range x {
			e, err := jsonable(e, depth+1)
			if err != nil {
				return nil, err
			}
			x[i] = e
		}
		return x, nil
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return nil, fmt.Errorf("%v cannot be written in JSON", x)
		}
		return x, nil
	case time.Time:
		return x.Format(time.RFC3339Nano), nil
	case []byte:
		return string(x), nil
	}
	return v, nil
}

// checkTree walks a YAML document once before it is decoded: duplicate
// keys, depth and size, so a hostile document fails fast with a place.
func checkTree(src *source, n *yaml.Node, path []string, depth int, count *int, ps *problems) bool {
	*count++
	if *count > maxNodes {
		ps.add(src.nodeError(n, path, fmt.Sprintf("document has more than %d values", maxNodes)))
		return false
	}
	if depth > maxDepth {
		ps.add(src.nodeError(n, path, fmt.Sprintf("nested deeper than %d levels", maxDepth)))
		return false
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if !checkTree(src, c, path, depth, count, ps) {
				return false
			}
		}
	case yaml.MappingNode:
		seen := map[string]*yaml.Node{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				ps.add(src.nodeError(k, path, "a mapping key must be a scalar"))
				return false
			}
			kp := with(path, k.Value)
			if k.Value != "<<" {
				if first, dup := seen[k.Value]; dup {
					ps.add(src.nodeError(k, kp, fmt.Sprintf("duplicate key %q (first at line %d)", k.Value, first.Line)))
					return false
				}
				seen[k.Value] = k
			}
			if !checkTree(src, v, kp, depth+1, count, ps) {
				return false
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if !checkTree(src, c, with(path, index(i)), depth+1, count, ps) {
				return false
			}
		}
	}
	return true
}

// maxNodes bounds the values in one manifest.
const maxNodes = 100_000
