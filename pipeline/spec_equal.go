package pipeline

import "reflect"

// Equal reports whether s and o describe the same pipeline: every field
// equal, including those JSON leaves out (an action's password and
// headers), with an empty list or map the same as none. It is the one
// comparison of specs: Apply leaves a pipeline whose spec is Equal running
// untouched, and a deployment's plan calls it unchanged.
func (s Spec) Equal(o Spec) bool { return sameValue(reflect.ValueOf(s), reflect.ValueOf(o)) }

// sameValue is reflect.DeepEqual for specs, except that nil and empty
// slices and maps are equal. Specs hold no cycles.
func sameValue(a, b reflect.Value) bool {
	switch a.Kind() {
	case reflect.Slice, reflect.Array:
		if a.Len() != b.Len() {
			return false
		}
		for i := range a.Len() {
			if !sameValue(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Map:
		if a.Len() != b.Len() {
			return false
		}
		for it := a.MapRange(); it.Next(); {
			bv := b.MapIndex(it.Key())
			if !bv.IsValid() || !sameValue(it.Value(), bv) {
				return false
			}
		}
		return true
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return sameValue(a.Elem(), b.Elem())
	case reflect.Struct:
		for i := range a.NumField() {
			if !sameValue(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	}
	return a.Equal(b)
}
