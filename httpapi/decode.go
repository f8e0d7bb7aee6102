package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
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
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
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
		p := problem(http.StatusBadRequest, "validation-error", "Invalid request", fmt.Sprintf("%s must be %s", typ.Field, typ.Type))
		p.Errors = []FieldError{{Field: typ.Field, Reason: "must be " + typ.Type.String() + " within range"}}
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
