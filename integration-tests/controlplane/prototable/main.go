// Command prototable prints how each built-in Kubernetes kind is laid out
// in protobuf, read from the Go types' struct tags by reflection: for every
// struct reachable from a kind client-go knows, its fields' protobuf
// numbers, JSON names and how Go's encoding/json would write them. The
// simulator reads this table (simulator/api/src/protobuf.table) to turn a
// protobuf request body into the JSON object kube-apiserver would store.
//
//	go run ./prototable > ../../simulator/api/src/protobuf.table
//
// Format, one record a line, fields separated by spaces:
//
//	K <apiVersion> <kind> <type>            a kind and its Go type
//	M <type> [slice]                        a message; "slice" for a named
//	                                        slice type (wire: repeated items = 1)
//	F <number> <json|-> <flags> <card> <value> [<map value>]
//	    flags: any of p (pointer), o (omitempty), z (omitzero), i (inline), or -
//	    card:  one | rep | map
//	    value: string bytes bool int32 int64 uint32 uint64 float64, a special
//	           (time microtime duration quantity intorstring raw fieldsv1),
//	           or a message type
package main

import (
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"k8s.io/client-go/kubernetes/scheme"
)

var specials = map[string]string{
	"apis/meta/v1.Time":       "time",
	"apis/meta/v1.MicroTime":  "microtime",
	"apis/meta/v1.Duration":   "duration",
	"apis/meta/v1.FieldsV1":   "fieldsv1",
	"api/resource.Quantity":   "quantity",
	"util/intstr.IntOrString": "intorstring",
	"runtime.RawExtension":    "raw",
}

// name is a type's package path, shortened, and its name:
// apps/v1.Deployment, apis/meta/v1.ObjectMeta.
func name(t reflect.Type) string {
	path := strings.TrimPrefix(t.PkgPath(), "k8s.io/api/")
	path = strings.TrimPrefix(path, "k8s.io/apimachinery/pkg/")
	return path + "." + t.Name()
}

type walker struct {
	seen  map[string]bool
	lines map[string][]string
}

// value names a field's value type, and queues messages to describe.
func (w *walker) value(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Name() != "" {
		if s, ok := specials[name(t)]; ok {
			return s
		}
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Int32:
		return "int32"
	case reflect.Int64, reflect.Int:
		return "int64"
	case reflect.Uint32:
		return "uint32"
	case reflect.Uint64:
		return "uint64"
	case reflect.Float64, reflect.Float32:
		return "float64"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "bytes"
		}
		if t.Name() != "" {
			// A named slice (Verbs, ExtraValue) is its own message.
			w.slice(t)
			return name(t)
		}
	case reflect.Struct:
		w.message(t)
		return name(t)
	}
	fmt.Fprintf(os.Stderr, "prototable: no protobuf form for %v\n", t)
	os.Exit(1)
	return ""
}

func (w *walker) slice(t reflect.Type) {
	n := name(t)
	if w.seen[n] {
		return
	}
	w.seen[n] = true
	w.lines[n] = []string{"M " + n + " slice", "F 1 items - rep " + w.value(t.Elem())}
}

func (w *walker) message(t reflect.Type) {
	n := name(t)
	if w.seen[n] {
		return
	}
	w.seen[n] = true
	lines := []string{"M " + n}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("protobuf")
		if !ok {
			continue
		}
		parts := strings.Split(tag, ",")
		number, err := strconv.Atoi(parts[1])
		if err != nil {
			fmt.Fprintf(os.Stderr, "prototable: %s.%s: bad tag %q\n", n, f.Name, tag)
			os.Exit(1)
		}
		json := strings.Split(f.Tag.Get("json"), ",")
		jname := json[0]
		flags := ""
		if f.Type.Kind() == reflect.Pointer {
			flags += "p"
		}
		for _, o := range json[1:] {
			switch o {
			case "omitempty":
				flags += "o"
			case "omitzero":
				flags += "z"
			case "inline":
				flags += "i"
			}
		}
		if jname == "" {
			jname = "-"
		}
		if flags == "" {
			flags = "-"
		}
		ft := f.Type
		card, value := "one", ""
		switch {
		case ft.Kind() == reflect.Map:
			card = "map"
			value = w.value(ft.Key()) + " " + w.value(ft.Elem())
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() != reflect.Uint8 && ft.Name() == "":
			card = "rep"
			value = w.value(ft.Elem())
		default:
			value = w.value(ft)
		}
		lines = append(lines, fmt.Sprintf("F %d %s %s %s %s", number, jname, flags, card, value))
	}
	w.lines[n] = lines
}

func main() {
	w := &walker{seen: map[string]bool{}, lines: map[string][]string{}}
	var kinds []string
	for gvk, t := range scheme.Scheme.AllKnownTypes() {
		if gvk.Version == "__internal" || t.Kind() != reflect.Struct {
			continue
		}
		if _, ok := t.FieldByName("TypeMeta"); !ok {
			continue
		}
		// Lists, watch events and the options of reads are never a
		// request's body; DeleteOptions is (client-go sends it on delete).
		k := gvk.Kind
		if strings.HasSuffix(k, "List") || k == "WatchEvent" || k == "Status" ||
			(strings.HasSuffix(k, "Options") && k != "DeleteOptions") {
			continue
		}
		w.message(t)
		kinds = append(kinds, fmt.Sprintf("K %s %s %s", gvk.GroupVersion().String(), gvk.Kind, name(t)))
	}
	sort.Strings(kinds)
	names := make([]string, 0, len(w.lines))
	for n := range w.lines {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Println("# Generated by integration-tests/controlplane/prototable from the Go types of")
	fmt.Println("# k8s.io/api and k8s.io/apimachinery pinned in its go.mod; do not edit.")
	for _, k := range kinds {
		fmt.Println(k)
	}
	for _, n := range names {
		for _, l := range w.lines[n] {
			fmt.Println(l)
		}
	}
}
