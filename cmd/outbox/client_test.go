package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// client is a tiny HTTP client for the API in tests.
type client struct {
	t    *testing.T
	base string
}

func (c *client) do(method, path, body string, headers map[string]string) (*http.Response, []byte) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func (c *client) create(customer string) string {
	c.t.Helper()
	resp, body := c.do("POST", "/orders", `{"customer_id":"`+customer+`","currency":"EUR","items":[{"sku":"a","quantity":1,"unit_price":100}]}`, nil)
	if resp.StatusCode != http.StatusCreated {
		c.t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	var o struct{ ID string }
	json.Unmarshal(body, &o)
	return o.ID
}

func (c *client) patch(id, body string) int {
	c.t.Helper()
	resp, _ := c.do("PATCH", "/orders/"+id, body, nil)
	return resp.StatusCode
}
