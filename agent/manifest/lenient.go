package manifest

import (
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"github.com/docker/docker/api/types/strslice"
	"go.yaml.in/yaml/v3"

	"ledge/internal/yamlstrict"
)

// The lenient reading of what edgeAgent reads with Json.NET's default
// settings: the $edgeAgent and $edgeHub desired properties, and every
// module's createOptions. A normalizer walks a node tree against the Go
// type it will be decoded into and rewrites it in place so that a strict
// decoder accepts it: keys matched case-insensitively are renamed to the
// field's name, unknown keys are dropped with a warning (with a "did you
// mean"), and scalars of another JSON type are converted as Json.NET
// converts them. What Json.NET refuses stays an error naming the path as
// the author wrote it.

// conversion is how a scalar of another JSON type than its field's is
// read.
type conversion int

const (
	// convGo is encoding/json's reading, the Docker engine's: the JSON
	// type must match (a string for a string, a number for a number...).
	convGo conversion = iota
	// convJSONNet is Json.NET's default reading, edgeAgent's: strings,
	// numbers and booleans convert into each other where the text allows.
	convJSONNet
	// convYAML is yaml/v3's reading, for ledge's native manifests: any
	// scalar is a string, numbers must be numbers and booleans booleans.
	convYAML
)

// normalizer rewrites a node tree for one Go type.
type normalizer struct {
	// tag names the struct tag that names fields: "json" or "yaml".
	tag string
	// conv says which conversions apply at a canonical path (field names
	// as Go knows them, "*" for a map key and "[]" for an array item).
	conv func(canon string) conversion
	// problem records an error, or a warning when warn is set; path is
	// as the author wrote it.
	problem func(warn bool, path []string, n *yaml.Node, msg string)
	// unknown words the warning for a key the type does not have.
	unknown func(parent, key, suggestion string) string
	// strict makes an unknown key an error (native manifests).
	strict bool
	// quiet, when set and true, says warnings are no longer kept (over
	// their cap): they are not even worded.
	quiet func() bool
	// errors counts the errors recorded, to stop early.
	errors int
}

func (z *normalizer) fail(path []string, n *yaml.Node, format string, args ...any) bool {
	z.errors++
	z.problem(false, path, n, fmt.Sprintf(format, args...))
	return false
}

func (z *normalizer) warn(path []string, n *yaml.Node, format string, args ...any) {
	z.problem(true, path, n, fmt.Sprintf(format, args...))
}

var (
	yamlUnmarshaler = reflect.TypeFor[yaml.Unmarshaler]()
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	strSliceType    = reflect.TypeFor[strslice.StrSlice]()
)

// walk normalizes n for type t. written is the path as the author wrote
// it, canon the canonical path. It returns false when it recorded an
// error.
func (z *normalizer) walk(n *yaml.Node, t reflect.Type, written []string, canon string) bool {
	if z.errors >= maxErrors {
		return false
	}
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	nullable := false
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
		nullable = true
	}
	if z.tag == "yaml" && reflect.PointerTo(t).Implements(yamlUnmarshaler) {
		return true // kept as written, read later (rawNode)
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		switch t.Kind() {
		case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
			if !nullable && z.conv(canon) == convJSONNet {
				return z.fail(written, n, "null is not %s (edgeAgent refuses it too)", kindWord(t))
			}
		}
		return true
	}
	if t == strSliceType {
		return z.strSlice(n, written, canon)
	}
	if z.tag == "json" && reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		return z.viaJSON(n, t, written)
	}
	switch t.Kind() {
	case reflect.Struct:
		return z.object(n, t, written, canon)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return z.fail(written, n, "want an object, got %s", describeNode(n))
		}
		ok := true
		dropDuplicates(n, func(k string) string { return k }, func(k *yaml.Node) {
			z.warn(with(written, k.Value), k, "%q is given twice: the last one counts", k.Value)
		})
		for i := 0; i+1 < len(n.Content); i += 2 {
			ok = z.walk(n.Content[i+1], t.Elem(), with(written, n.Content[i].Value), canon+".*") && ok
		}
		return ok
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return z.fail(written, n, "want an array, got %s", describeNode(n))
		}
		ok := true
		for i, item := range n.Content {
			ok = z.walk(item, t.Elem(), with(written, index(i)), canon+".[]") && ok
		}
		return ok
	case reflect.Interface:
		return true
	}
	if n.Kind != yaml.ScalarNode {
		return z.fail(written, n, "want %s, got %s", kindWord(t), describeNode(n))
	}
	return z.scalar(n, t, written, canon)
}

// object normalizes a mapping for a struct: keys are matched exactly,
// then case-insensitively, and renamed; unknown keys are dropped with a
// warning; a key given twice keeps its last value.
func (z *normalizer) object(n *yaml.Node, t reflect.Type, written []string, canon string) bool {
	if n.Kind != yaml.MappingNode {
		return z.fail(written, n, "want an object, got %s", describeNode(n))
	}
	fields := fieldsOf(t, z.tag)
	if len(fields.list) == 0 {
		n.Content = nil // struct{}: any object, nothing read
		return true
	}
	ok := true
	kept := n.Content[:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		f, found := fields.byName[k.Value]
		if !found {
			for _, cand := range fields.list {
				if strings.EqualFold(cand.name, k.Value) {
					f, found = cand, true
					break
				}
			}
		}
		if !found && !z.strict && z.quiet != nil && z.quiet() {
			continue // dropped; the warning would not be kept
		}
		if !found {
			names := make([]string, len(fields.list))
			for j, cand := range fields.list {
				names[j] = cand.name
			}
			msg := z.unknown(canon, k.Value, yamlstrict.Suggest(k.Value, names))
			if z.strict {
				ok = z.fail(with(written, k.Value), k, "%s", msg)
			} else {
				z.warn(with(written, k.Value), k, "%s", msg)
			}
			continue
		}
		kp := with(written, k.Value)
		if z.walk(v, f.typ, kp, joinCanon(canon, f.name)) {
			k.Value = f.name
		} else {
			ok = false
		}
		kept = append(kept, k, v)
	}
	n.Content = kept
	dropDuplicates(n, func(k string) string { return k }, func(k *yaml.Node) {
		z.warn(with(written, k.Value), k, "%q is given twice (names are read case-insensitively): the last one counts", k.Value)
	})
	return ok
}

func joinCanon(canon, name string) string {
	if canon == "" {
		return name
	}
	return canon + "." + name
}

// dropDuplicates removes from mapping n every pair whose key (as named by
// name) comes again later, telling about each.
func dropDuplicates(n *yaml.Node, name func(string) string, told func(k *yaml.Node)) {
	last := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		last[name(n.Content[i].Value)] = i
	}
	if len(last)*2 == len(n.Content) {
		return
	}
	kept := n.Content[:0:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		if last[name(n.Content[i].Value)] != i {
			told(n.Content[i])
			continue
		}
		kept = append(kept, n.Content[i], n.Content[i+1])
	}
	n.Content = kept
}

// strSlice is Docker's StrSlice (Cmd, Entrypoint, Shell): a string or an
// array of strings.
func (z *normalizer) strSlice(n *yaml.Node, written []string, canon string) bool {
	switch n.Kind {
	case yaml.ScalarNode:
		return z.scalar(n, reflect.TypeFor[string](), written, canon)
	case yaml.SequenceNode:
		ok := true
		for i, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				ok = z.fail(with(written, index(i)), item, "want a string, got %s", describeNode(item)) && ok
				continue
			}
			ok = z.scalar(item, reflect.TypeFor[string](), with(written, index(i)), canon+".[]") && ok
		}
		return ok
	}
	return z.fail(written, n, "want a string or an array of strings, got %s", describeNode(n))
}

// viaJSON checks a value of a type that decodes itself.
func (z *normalizer) viaJSON(n *yaml.Node, t reflect.Type, written []string) bool {
	data, err := canonicalNode(n)
	if err == nil {
		err = json.Unmarshal(data, reflect.New(t).Interface())
	}
	if err != nil {
		return z.fail(written, n, "%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return true
}

// scalar converts a scalar node for a string, bool or number field.
func (z *normalizer) scalar(n *yaml.Node, t reflect.Type, written []string, canon string) bool {
	conv := z.conv(canon)
	tag := n.ShortTag()
	switch t.Kind() {
	case reflect.String:
		switch {
		case tag == "!!str" || conv == convYAML:
			return true
		case conv != convJSONNet:
			return z.fail(written, n, "want a string, got %s", describeNode(n))
		case tag == "!!bool":
			setStr(n, dotNetBool(n.Value))
		case tag == "!!int":
			if v, ok := parseBigInt(n.Value); ok {
				setStr(n, v.String())
			} else {
				setStr(n, n.Value)
			}
		case tag == "!!float":
			f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
			if err != nil && !isRangeErr(err) {
				return z.fail(written, n, "%q is not a number", shorten(n.Value))
			}
			setStr(n, dotNetDouble(f))
		default:
			return z.fail(written, n, "want a string, got %s", describeNode(n))
		}
		return true
	case reflect.Bool:
		switch {
		case tag == "!!bool":
			n.Value = strings.ToLower(n.Value)
			return true
		case conv != convJSONNet:
			return z.fail(written, n, "want true or false, got %s", describeNode(n))
		case tag == "!!str":
			s := strings.Trim(n.Value, " \t\r\n\f\v\x00")
			switch {
			case strings.EqualFold(s, "true"):
				setBool(n, true)
			case strings.EqualFold(s, "false"):
				setBool(n, false)
			default:
				return z.fail(written, n, "%q is not true or false (edgeAgent refuses it too)", shorten(n.Value))
			}
		case tag == "!!int" || tag == "!!float":
			f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
			if v, ok := parseBigInt(n.Value); ok {
				setBool(n, v.Sign() != 0)
			} else if err == nil || isRangeErr(err) {
				setBool(n, f != 0)
			} else {
				return z.fail(written, n, "%q is not a number", shorten(n.Value))
			}
		default:
			return z.fail(written, n, "want true or false, got %s", describeNode(n))
		}
		return true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return z.integer(n, t, written, conv)
	case reflect.Float32, reflect.Float64:
		var f float64
		switch {
		case tag == "!!int" || tag == "!!float":
			v, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
			if err != nil {
				return z.fail(written, n, "%s is out of range", shorten(n.Value))
			}
			f = v
		case conv != convJSONNet:
			return z.fail(written, n, "want a number, got %s", describeNode(n))
		case tag == "!!str":
			v, err := strconv.ParseFloat(strings.TrimSpace(n.Value), 64)
			if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
				return z.fail(written, n, "%q is not a number (edgeAgent refuses it too)", shorten(n.Value))
			}
			f = v
		case tag == "!!bool":
			if strings.EqualFold(n.Value, "true") {
				f = 1
			}
		default:
			return z.fail(written, n, "want a number, got %s", describeNode(n))
		}
		setNumber(n, strconv.FormatFloat(f, 'g', -1, 64), "!!float")
		return true
	}
	return z.fail(written, n, "cannot be read into %s", t)
}

// integer converts a scalar for an integer field of t's size, as Json.NET
// does (strings with an optional sign and digits, booleans as 1 and 0,
// fractions rounded half to even) or as encoding/json does (an integer
// literal only).
func (z *normalizer) integer(n *yaml.Node, t reflect.Type, written []string, conv conversion) bool {
	tag := n.ShortTag()
	var v *big.Int
	switch {
	case tag == "!!int" && len(n.Value) > maxIntDigits && isIntegerText(n.Value):
		lo, hi := intRange(t)
		return z.fail(written, n, "a %d-digit number is out of range: want %s to %s", len(n.Value), lo, hi)
	case tag == "!!int":
		var ok bool
		if v, ok = parseBigInt(n.Value); !ok {
			return z.fail(written, n, "%q is not an integer", shorten(n.Value))
		}
	case tag == "!!float":
		f, _, err := big.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 10, 256, big.ToNearestEven)
		if err != nil || f.IsInf() {
			return z.fail(written, n, "%q is not a number", shorten(n.Value))
		}
		if f.MantExp(nil) > 128 {
			lo, hi := intRange(t)
			return z.fail(written, n, "%s is out of range: want %s to %s", shorten(n.Value), lo, hi)
		}
		if iv, acc := f.Int(nil); acc == big.Exact {
			if conv == convGo && !isIntegerText(n.Value) {
				return z.fail(written, n, "want an integer, got %s (the Docker engine refuses a number with a fraction or an exponent here)", shorten(n.Value))
			}
			v = iv
		} else if conv != convJSONNet {
			return z.fail(written, n, "want an integer, got %s", shorten(n.Value))
		} else {
			// Json.NET reads a double and converts it with Convert.ToInt64:
			// rounded half to even.
			frac := new(big.Float).Sub(f, new(big.Float).SetInt(iv))
			half := big.NewFloat(0.5)
			switch c := new(big.Float).Abs(frac).Cmp(half); {
			case c > 0 || (c == 0 && iv.Bit(0) == 1):
				if f.Sign() < 0 {
					iv.Sub(iv, big.NewInt(1))
				} else {
					iv.Add(iv, big.NewInt(1))
				}
			}
			v = iv
			z.warn(written, n, "%s is rounded to %s, as edgeAgent does", shorten(n.Value), v)
		}
	case conv != convJSONNet:
		return z.fail(written, n, "want an integer, got %s", describeNode(n))
	case tag == "!!str":
		s := strings.TrimSpace(n.Value)
		digits := strings.TrimLeft(s, "+-")
		if len(s)-len(digits) > 1 || digits == "" || strings.Trim(digits, "0123456789") != "" {
			return z.fail(written, n, "%q is not an integer (edgeAgent refuses it too)", shorten(n.Value))
		}
		v, _ = new(big.Int).SetString(strings.TrimPrefix(s, "+"), 10)
	case tag == "!!bool":
		v = big.NewInt(0)
		if strings.EqualFold(n.Value, "true") {
			v = big.NewInt(1)
		}
	default:
		return z.fail(written, n, "want an integer, got %s", describeNode(n))
	}
	lo, hi := intRange(t)
	if v.Cmp(lo) < 0 || v.Cmp(hi) > 0 {
		return z.fail(written, n, "%s is out of range: want %s to %s", shorten(n.Value), lo, hi)
	}
	setNumber(n, v.String(), "!!int")
	return true
}

// shorten keeps a value quoted in a message short.
func shorten(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}

func isIntegerText(s string) bool {
	s = strings.TrimPrefix(s, "-")
	return s != "" && strings.Trim(s, "0123456789") == ""
}

func isRangeErr(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

// maxIntDigits bounds the integers read exactly: far beyond any field's
// range, and short enough that reading them costs nothing.
const maxIntDigits = 64

// parseBigInt reads an integer as JSON or YAML writes one; one longer
// than maxIntDigits is not read (false).
func parseBigInt(s string) (*big.Int, bool) {
	if len(s) > maxIntDigits {
		return nil, false
	}
	s = strings.ReplaceAll(s, "_", "")
	v, ok := new(big.Int).SetString(s, 0)
	if !ok {
		v, ok = new(big.Int).SetString(s, 10) // leading zeros
	}
	return v, ok
}

func intRange(t reflect.Type) (lo, hi *big.Int) {
	bits := uint(t.Bits())
	switch t.Kind() {
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return big.NewInt(0), new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), bits), big.NewInt(1))
	}
	hi = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), bits-1), big.NewInt(1))
	lo = new(big.Int).Neg(new(big.Int).Lsh(big.NewInt(1), bits-1))
	return lo, hi
}

func setStr(n *yaml.Node, s string) {
	n.Tag, n.Value, n.Style = "!!str", s, yaml.DoubleQuotedStyle
}

func setBool(n *yaml.Node, b bool) {
	n.Tag, n.Value, n.Style = "!!bool", strconv.FormatBool(b), 0
}

func setNumber(n *yaml.Node, s, tag string) {
	n.Tag, n.Value, n.Style = tag, s, 0
}

// dotNetBool is how .NET writes a boolean as text.
func dotNetBool(v string) string {
	if strings.EqualFold(v, "true") {
		return "True"
	}
	return "False"
}

// dotNetDouble is how .NET (Core 3.0 and later) writes a double as text:
// the shortest text that reads back the same, with an exponent ("1E+15",
// "1E-05") outside 1e-5 <= |f| < 1e15.
func dotNetDouble(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "∞"
	case math.IsInf(f, -1):
		return "-∞"
	case math.IsNaN(f):
		return "NaN"
	}
	a := math.Abs(f)
	if a == 0 || (a >= 1e-5 && a < 1e15) {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	s := strconv.FormatFloat(f, 'E', -1, 64) // 1.5E+20
	mant, exp, _ := strings.Cut(s, "E")
	sign := exp[:1]
	digits := strings.TrimLeft(exp[1:], "0")
	if len(digits) < 2 {
		digits = strings.Repeat("0", 2-len(digits)) + digits
	}
	return mant + "E" + sign + digits
}

// kindWord names what a Go type takes, for messages.
func kindWord(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "a value"
}

// describeNode names what a node holds, for messages: `the string "x"`.
func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "an object"
	case yaml.SequenceNode:
		return "an array"
	}
	switch n.ShortTag() {
	case "!!str":
		return fmt.Sprintf("the string %q", shorten(n.Value))
	case "!!bool":
		return "the boolean " + strings.ToLower(n.Value)
	case "!!int", "!!float":
		return "the number " + shorten(n.Value)
	case "!!null":
		return "null"
	}
	return fmt.Sprintf("%q", shorten(n.Value))
}

// fieldSet is the fields of a struct as a decoder sees them.
type fieldSet struct {
	list   []field
	byName map[string]field
}

type field struct {
	name string
	typ  reflect.Type
}

var fieldCache sync.Map // fieldKey -> *fieldSet

type fieldKey struct {
	t   reflect.Type
	tag string
}

// fieldsOf lists the fields of struct t as encoding/json ("json") or
// yaml/v3 ("yaml") names them, embedded structs flattened.
func fieldsOf(t reflect.Type, tag string) *fieldSet {
	if v, ok := fieldCache.Load(fieldKey{t, tag}); ok {
		return v.(*fieldSet)
	}
	fs := &fieldSet{byName: map[string]field{}}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get(tag), ",")
			if name == "-" && opts == "" {
				continue
			}
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			inline := (tag == "json" && f.Anonymous && name == "" && ft.Kind() == reflect.Struct) ||
				(tag == "yaml" && strings.Contains(opts, "inline"))
			if inline {
				walk(ft)
				continue
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
				if tag == "yaml" {
					name = strings.ToLower(name)
				}
			}
			if _, dup := fs.byName[name]; dup {
				continue // the outer field wins
			}
			fd := field{name: name, typ: f.Type}
			fs.list = append(fs.list, fd)
			fs.byName[name] = fd
		}
	}
	walk(t)
	v, _ := fieldCache.LoadOrStore(fieldKey{t, tag}, fs)
	return v.(*fieldSet)
}
