package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
)

// MaxBodyBytes caps every request body.
const MaxBodyBytes = 64 << 10

// decode reads one strict JSON value into dst: JSON content type, at most
// MaxBodyBytes, no unknown fields, nothing after the value.
func decode(w http.ResponseWriter, r *http.Request, dst any) *Problem {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || !(mt == "application/json" || strings.HasSuffix(mt, "+json")) {
		return problem(http.StatusUnsupportedMediaType, "unsupported-media-type", "Unsupported media type",
			fmt.Sprintf("the body must be application/json, got %q", ct))
	}
	// What was read is kept, to name the array element of a type error.
	var read bytes.Buffer
	body := io.TeeReader(http.MaxBytesReader(w, r.Body, MaxBodyBytes), &read)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) {
			typ.Field = elementPath(read.Bytes(), typ.Field, typ.Offset)
		}
		return decodeProblem(err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return decodeProblem(err)
		}
		return problem(http.StatusBadRequest, "malformed-json", "Malformed JSON", "the body holds data after the JSON value")
	}
	return nil
}

func decodeProblem(err error) *Problem {
	var tooLarge *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooLarge):
		return problem(http.StatusRequestEntityTooLarge, "body-too-large", "Request body too large",
			fmt.Sprintf("the body must be at most %d bytes", MaxBodyBytes))
	case errors.Is(err, io.EOF):
		return problem(http.StatusBadRequest, "malformed-json", "Malformed JSON", "the body is empty")
	case errors.As(err, &syntax):
		return problem(http.StatusBadRequest, "malformed-json", "Malformed JSON", fmt.Sprintf("syntax error at byte %d", syntax.Offset))
	case errors.As(err, &typ):
		reason := "must be " + jsonKind(typ.Type)
		name := typ.Field
		if name == "" {
			name = "the body"
		}
		p := problem(http.StatusBadRequest, "validation-error", "Invalid request", name+" "+reason)
		p.Errors = []FieldError{{Field: typ.Field, Reason: reason}}
		return p
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no typed error for this one.
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		p := problem(http.StatusBadRequest, "validation-error", "Invalid request", "unknown field "+field)
		p.Errors = []FieldError{{Field: field, Reason: "unknown field"}}
		return p
	case errors.Is(err, io.ErrUnexpectedEOF):
		return problem(http.StatusBadRequest, "malformed-json", "Malformed JSON", "the body ends inside a JSON value")
	default:
		return problem(http.StatusBadRequest, "malformed-json", "Malformed JSON", "the body is not a JSON object of the expected shape")
	}
}

// jsonKind names what a Go type holds in JSON's words.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "of another type"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer within range"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer within range"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	default:
		return "an object"
	}
}

// elementPath adds the index of the array element to a type error's
// field: "items.quantity" at an offset inside the third item of the
// top-level "items" array is "items[2].quantity". Without an array there,
// field is returned as it is.
func elementPath(body []byte, field string, offset int64) string {
	top, rest, ok := strings.Cut(field, ".")
	if !ok {
		return field
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return field
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return field
		}
		if key != top {
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return field
			}
			continue
		}
		if t, err := dec.Token(); err != nil || t != json.Delim('[') {
			return field
		}
		for i := 0; dec.More(); i++ {
			var elem json.RawMessage
			if dec.Decode(&elem) != nil {
				return field
			}
			if offset <= dec.InputOffset() {
				return top + "[" + strconv.Itoa(i) + "]." + rest
			}
		}
		return field
	}
	return field
}
