package testenv

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// APIClient is a tiny HTTP client for the order API in tests.
type APIClient struct {
	T    testing.TB
	Base string
}

// Do sends a request and returns the response with its body read.
func (c *APIClient) Do(method, path, body string, headers map[string]string) (*http.Response, []byte) {
	c.T.Helper()
	req, err := http.NewRequest(method, c.Base+path, strings.NewReader(body))
	if err != nil {
		c.T.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.T.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// Create creates an order for customer and returns its id.
func (c *APIClient) Create(customer string) string {
	c.T.Helper()
	resp, body := c.Do("POST", "/orders", `{"customer_id":"`+customer+`","currency":"EUR","items":[{"sku":"a","quantity":1,"unit_price":100}]}`, nil)
	if resp.StatusCode != http.StatusCreated {
		c.T.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	var o struct{ ID string }
	json.Unmarshal(body, &o)
	return o.ID
}

// Patch updates an order and returns the status code.
func (c *APIClient) Patch(id, body string) int {
	c.T.Helper()
	resp, _ := c.Do("PATCH", "/orders/"+id, body, nil)
	return resp.StatusCode
}

// CappedBuffer collects a process's output, up to 1 MiB, safely from
// several goroutines.
type CappedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *CappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() < 1<<20 {
		b.buf.Write(p)
	}
	return len(p), nil
}

func (b *CappedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// ListenAddr finds the addr= of the first log line containing msg.
func ListenAddr(log, msg string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, msg) {
			if _, rest, ok := strings.Cut(l, "addr="); ok {
				return strings.Fields(rest)[0]
			}
		}
	}
	return ""
}
