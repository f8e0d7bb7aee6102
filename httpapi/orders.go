package httpapi

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/outbox-dev/outbox/order"
)

func meta(r *http.Request) order.Meta {
	return order.Meta{IdempotencyKey: r.Header.Get("Idempotency-Key"), TraceParent: r.Header.Get("traceparent")}
}

// ifMatch parses If-Match: "3", W/"3" or 3. Absent or * means no check.
func ifMatch(r *http.Request) (int64, *Problem) {
	v := strings.TrimSpace(r.Header.Get("If-Match"))
	if v == "" || v == "*" {
		return 0, nil
	}
	v = strings.Trim(strings.TrimPrefix(v, "W/"), `"`)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		return 0, problem(http.StatusBadRequest, "invalid-if-match", "Invalid If-Match", `If-Match must be the order's ETag, such as "3"`)
	}
	return n, nil
}

func (a *api) orderProblem(w http.ResponseWriter, r *http.Request, err error) {
	var ve *order.ValidationError
	switch {
	case errors.As(err, &ve):
		p := problem(http.StatusBadRequest, "validation-error", "Invalid request", ve.Error())
		p.Errors = []FieldError{{Field: ve.Field, Reason: ve.Reason}}
		writeProblem(w, r, p)
	case errors.Is(err, order.ErrNotFound):
		writeProblem(w, r, problem(http.StatusNotFound, "not-found", "Order not found", "no order has id "+r.PathValue("id")))
	case errors.Is(err, order.ErrConflict):
		writeProblem(w, r, problem(http.StatusConflict, "version-conflict", "Version conflict", "the order changed since that version; GET it and retry with its ETag"))
	case errors.Is(err, order.ErrCancelled):
		writeProblem(w, r, problem(http.StatusConflict, "order-cancelled", "Order cancelled", "a cancelled order cannot change"))
	case errors.Is(err, order.ErrIdempotencyKey):
		writeProblem(w, r, problem(http.StatusUnprocessableEntity, "idempotency-key-reused", "Idempotency key reused",
			"this Idempotency-Key was used with a different request body"))
	case errors.Is(err, order.ErrUnavailable):
		w.Header().Set("Retry-After", "1")
		writeProblem(w, r, problem(http.StatusServiceUnavailable, "unavailable", "Service unavailable", "the order service or its database is unavailable; retry shortly (with If-Match or Idempotency-Key the retry is safe)"))
	default:
		a.internal(w, r, err)
	}
}

func writeOrder(w http.ResponseWriter, status int, o order.Order) {
	w.Header().Set("ETag", `"`+strconv.FormatInt(o.Version, 10)+`"`)
	writeJSON(w, status, o)
}

func (a *api) createOrder(w http.ResponseWriter, r *http.Request) {
	var in order.CreateInput
	if p := decode(w, r, &in); p != nil {
		writeProblem(w, r, p)
		return
	}
	o, replayed, err := a.Orders.Create(r.Context(), in, meta(r))
	if err != nil {
		a.orderProblem(w, r, err)
		return
	}
	w.Header().Set("Location", "/orders/"+o.ID)
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
		writeOrder(w, http.StatusOK, o)
		return
	}
	writeOrder(w, http.StatusCreated, o)
}

func (a *api) getOrder(w http.ResponseWriter, r *http.Request) {
	o, err := a.Orders.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		a.orderProblem(w, r, err)
		return
	}
	writeOrder(w, http.StatusOK, o)
}

func (a *api) updateOrder(w http.ResponseWriter, r *http.Request) {
	expected, p := ifMatch(r)
	if p != nil {
		writeProblem(w, r, p)
		return
	}
	var in order.UpdateInput
	if p := decode(w, r, &in); p != nil {
		writeProblem(w, r, p)
		return
	}
	o, err := a.Orders.Update(r.Context(), r.PathValue("id"), in, expected, meta(r))
	if err != nil {
		a.orderProblem(w, r, err)
		return
	}
	writeOrder(w, http.StatusOK, o)
}

func (a *api) cancelOrder(w http.ResponseWriter, r *http.Request) {
	expected, p := ifMatch(r)
	if p != nil {
		writeProblem(w, r, p)
		return
	}
	if r.ContentLength != 0 {
		var none struct{}
		if p := decode(w, r, &none); p != nil {
			writeProblem(w, r, p)
			return
		}
	}
	o, err := a.Orders.Cancel(r.Context(), r.PathValue("id"), expected, meta(r))
	if err != nil {
		a.orderProblem(w, r, err)
		return
	}
	writeOrder(w, http.StatusOK, o)
}
