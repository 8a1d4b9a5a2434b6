package route

// op is what a node of a compiled condition does.
type op uint8

const (
	opLit     op = iota // val
	opApp               // bare name: application property name
	opSys               // $name: application property "$name", else system property sys
	opSysOnly           // {$name}: system property sys
	opBody              // $body.path (application property name first if appFirst), {$body.path}
	opNeg
	opNot
	opMul
	opDiv
	opMod
	opAdd
	opSub
	opConcat
	opLt
	opLe
	opGt
	opGe
	opEq
	opNe
	opAnd
	opOr
	opCoalesce
	opCall // fn(kids...)
	opDoc  // bare name in a twin query: a JSON path into the document (the message body)
)

// stype is what the parser knows about a node's value before any message
// is seen. Properties are strings (or undefined when absent); a $body query
// can be anything (sDyn).
type stype uint8

const (
	sUndef stype = iota
	sNull
	sBool
	sNumber
	sString
	sDyn
)

func (t stype) String() string {
	switch t {
	case sNull:
		return "null"
	case sBool:
		return "bool"
	case sNumber:
		return "number"
	case sString:
		return "string"
	case sDyn:
		return "any"
	}
	return "undefined"
}

// known reports whether the type is fixed at parse time (and not merely
// undefined, which every operator accepts and propagates).
func (t stype) known() bool { return t != sDyn && t != sUndef }

type pathSeg struct {
	name  string
	index int // array index after the name, -1 for none
}

type node struct {
	op       op
	typ      stype
	pos      int
	val      Value
	name     string // property name looked up in App
	sys      string // system property name (without '$')
	appFirst bool   // opBody: try the application property name first
	path     []pathSeg
	fn       fnID
	kids     []*node
}
