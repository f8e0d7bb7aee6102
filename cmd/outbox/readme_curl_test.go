package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outbox-dev/outbox/internal/app"
	"github.com/outbox-dev/outbox/internal/testenv"
)

// readmeBase is the address README's curl examples use.
const readmeBase = "http://127.0.0.1:8080"

// curlExample is one curl command of README's examples, its words as the
// shell would pass them.
type curlExample struct {
	line    string
	method  string
	url     string
	headers [][2]string
	data    *string
}

// readmeCurls returns the curl commands of README's code block that
// names this test, their words expanded with vars as sh would.
func readmeCurls(t *testing.T, vars map[string]string) []curlExample {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	i := strings.Index(text, "TestREADMECurlExamplesRunAgainstServe")
	if i < 0 {
		t.Fatal("README names no TestREADMECurlExamplesRunAgainstServe before its curl examples")
	}
	start := strings.Index(text[i:], "```sh\n")
	end := strings.Index(text[i+start+6:], "```")
	if start < 0 || end < 0 {
		t.Fatal("README: no ```sh block after the examples' paragraph")
	}
	block := strings.ReplaceAll(text[i+start+6:i+start+6+end], "\\\n", " ")
	var out []curlExample
	for line := range strings.Lines(block) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		words, err := shellWords(line, vars)
		if err != nil || len(words) == 0 || words[0] != "curl" {
			t.Fatalf("README example %q: not a curl command the test can read (%v)", line, err)
		}
		ex := curlExample{line: line}
		for j := 1; j < len(words); j++ {
			w := words[j]
			arg := func() string {
				j++
				if j == len(words) {
					t.Fatalf("README example %q: %s without its value", line, w)
				}
				return words[j]
			}
			switch {
			case w == "-X":
				ex.method = arg()
			case w == "-H":
				k, v, ok := strings.Cut(arg(), ":")
				if !ok {
					t.Fatalf("README example %q: header %q", line, words[j])
				}
				ex.headers = append(ex.headers, [2]string{k, strings.TrimSpace(v)})
			case w == "-d":
				d := arg()
				ex.data = &d
			case regexp.MustCompile(`^-[si]+$`).MatchString(w):
				// silent, headers shown: nothing to do with the request
			case strings.HasPrefix(w, "-"):
				t.Fatalf("README example %q: option %s is one this test does not know", line, w)
			case ex.url != "":
				t.Fatalf("README example %q: two URLs", line)
			default:
				ex.url = w
			}
		}
		if ex.method == "" {
			ex.method = "GET"
			if ex.data != nil {
				ex.method = "POST"
			}
		}
		out = append(out, ex)
	}
	return out
}

// shellWords splits line as sh would: single quotes keep everything,
// double quotes and bare words expand $NAME from vars (a name not in
// vars is an error, as the example would send it empty).
func shellWords(line string, vars map[string]string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	expand := func(s string, i int) (int, error) {
		j := i + 1
		for j < len(s) && (s[j] == '_' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= 'a' && s[j] <= 'z' || s[j] >= '0' && s[j] <= '9') {
			j++
		}
		v, ok := vars[s[i+1:j]]
		if !ok {
			return 0, fmt.Errorf("$%s is not set", s[i+1:j])
		}
		cur.WriteString(v)
		return j, nil
	}
	for i := 0; i < len(line); {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
			i++
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unclosed '")
			}
			cur.WriteString(line[i+1 : i+1+j])
			i, inWord = i+j+2, true
		case c == '"':
			i, inWord = i+1, true
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '$' {
					j, err := expand(line, i)
					if err != nil {
						return nil, err
					}
					i = j - 1
					continue
				}
				if line[i] == '\\' && i+1 < len(line) {
					i++
				}
				cur.WriteByte(line[i])
			}
			if i == len(line) {
				return nil, fmt.Errorf(`unclosed "`)
			}
			i++
		case c == '$':
			j, err := expand(line, i)
			if err != nil {
				return nil, err
			}
			i, inWord = j, true
		case strings.IndexByte("|&;<>()`*?[", c) >= 0:
			return nil, fmt.Errorf("%q outside quotes: the shell would treat it specially", c)
		default:
			cur.WriteByte(c)
			i, inWord = i+1, true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// TestREADMECurlExamplesRunAgainstServe sends each curl example of README
// to a real `outbox serve` (in-process, with an admin token and a dead
// letter to act on), as curl would send it, and wants a 2xx for each; and
// every operation of httpapi/openapi.json has an example.
func TestREADMECurlExamplesRunAgainstServe(t *testing.T) {
	const token = "readme-test-token-81c3"
	t.Setenv("OUTBOX_ADMIN_TOKEN", token)
	b, tooLarge := refusingBroker(t)
	base, logs := serveSecure(t, "--brokers", b.Addrs()[0])
	defer func() {
		if t.Failed() {
			t.Logf("serve's log:\n%s", logs)
		}
	}()

	// A dead letter for the /dlq examples: a cancellation the broker
	// refuses as too large.
	c := &testenv.APIClient{T: t, Base: base}
	auth := map[string]string{"Authorization": "Bearer " + token}
	status := func() app.StatusDoc {
		_, body := c.Do("GET", "/status", "", nil)
		var st app.StatusDoc
		json.Unmarshal(body, &st)
		return st
	}
	victim := c.Create("dead-letter")
	testenv.Eventually(t, 20*time.Second, "the order published", func() bool { return status().Published >= 1 })
	tooLarge.Store(true)
	if resp, body := c.Do("POST", "/orders/"+victim+"/cancel", "", nil); resp.StatusCode != 200 {
		t.Fatalf("cancel: %d %s", resp.StatusCode, body)
	}
	testenv.Eventually(t, 20*time.Second, "the cancellation dead-lettered", func() bool { return status().DeadLettered == 1 })
	tooLarge.Store(false)
	_, body := c.Do("GET", "/dlq", "", auth)
	var page struct{ Items []struct{ ID json.Number } }
	if err := json.Unmarshal(body, &page); err != nil || len(page.Items) != 1 {
		t.Fatalf("GET /dlq: %v %s", err, body)
	}

	vars := map[string]string{"ID": "(set by the first POST /orders)", "DL": page.Items[0].ID.String(), "OUTBOX_ADMIN_TOKEN": token}
	examples := readmeCurls(t, vars)
	send := func(ex curlExample) (int, http.Header, []byte) {
		t.Helper()
		if !strings.HasPrefix(ex.url, readmeBase+"/") {
			t.Fatalf("README example %q: the URL is not on %s", ex.line, readmeBase)
		}
		var body io.Reader
		if ex.data != nil {
			body = strings.NewReader(*ex.data)
		}
		req, err := http.NewRequest(ex.method, base+strings.TrimPrefix(ex.url, readmeBase), body)
		if err != nil {
			t.Fatalf("README example %q: %v", ex.line, err)
		}
		if ex.data != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded") // curl's, unless -H gives one
		}
		for _, h := range ex.headers {
			req.Header.Set(h[0], h[1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("README example %q: %v", ex.line, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b
	}
	covered := map[string]bool{}
	for n, ex := range examples {
		ex = readmeCurls(t, vars)[n] // $ID as the examples before set it
		code, header, body := send(ex)
		if code < 200 || code > 299 {
			t.Errorf("README example %q: %d %s", ex.line, code, body)
			continue
		}
		covered[ex.method+" "+operation(strings.TrimPrefix(ex.url, readmeBase))] = true
		if ex.method == "POST" && strings.HasSuffix(ex.url, "/orders") {
			var o struct{ ID string }
			json.Unmarshal(body, &o)
			vars["ID"] = o.ID
			// What its comment says: the same key again is the same order.
			again, h, body2 := send(ex)
			if again != 200 || h.Get("Idempotent-Replayed") != "true" || !strings.Contains(string(body2), o.ID) {
				t.Errorf("README's create sent again: %d %v %s, want 200 and the same order", again, h, body2)
			}
		}
		if strings.Contains(ex.line, "ETag") && header.Get("ETag") == "" {
			t.Errorf("README example %q: no ETag", ex.line)
		}
	}

	// Every operation of the OpenAPI document has its example.
	doc, err := os.ReadFile("../../httpapi/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Paths map[string]map[string]json.RawMessage
	}
	if err := json.Unmarshal(doc, &spec); err != nil {
		t.Fatal(err)
	}
	for path, ops := range spec.Paths {
		for method := range ops {
			if op := strings.ToUpper(method) + " " + path; !covered[op] {
				t.Errorf("README has no curl example of %s", op)
			}
		}
	}
}

// operation is the OpenAPI path of a request path: ids become {id}.
func operation(path string) string {
	path, _, _ = strings.Cut(path, "?")
	parts := strings.Split(path, "/")
	if len(parts) > 2 && (parts[1] == "orders" || parts[1] == "dlq" && parts[2] != "parked" && parts[2] != "replay") {
		parts[2] = "{id}"
	}
	return strings.Join(parts, "/")
}
