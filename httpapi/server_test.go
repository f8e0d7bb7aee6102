package httpapi_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outbox-dev/outbox/httpapi"
)

// pipeListener hands the server in-memory connections, so a synctest
// bubble's fake clock drives the server's deadlines.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error { l.once.Do(func() { close(l.closed) }); return nil }

func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

func (l *pipeListener) dial() net.Conn {
	client, server := net.Pipe()
	l.conns <- server
	return client
}

// answer is what a client read from its connection until the server
// closed it, and when that was.
type answer struct {
	data     string
	closedAt time.Duration
}

// NewServer's limits, each met by a client that misbehaves in one way:
// slow headers (slowloris), a slow body, a keep-alive connection left
// idle, a client that never reads, headers over the limit. The times are
// exact: the bubble's clock moves only when everything waits.
func TestServerTimeoutsAndHeaderLimit(t *testing.T) {
	big := strings.Repeat("a", 1<<20)
	header := func(n int) string {
		return "GET /ok HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", n) + "\r\n\r\n"
	}
	for _, tc := range []struct {
		name string
		// write plays the client; it returns when done or when the
		// server has closed the connection.
		write func(c net.Conn)
		// readAfter delays the client's reading (0: reads at once).
		readAfter  time.Duration
		wantStatus string // the answer's first line; "" for any but a success
		wantClosed time.Duration
		// wantWriteFailedAt: when the handler's write failed (0: it did not).
		wantWriteFailedAt time.Duration
	}{
		{
			name: "slow headers are cut at ReadHeaderTimeout",
			write: func(c net.Conn) {
				io.WriteString(c, "GET /ok HTTP/1.1\r\nHost: a\r\n")
				for range 100 { // one byte of a header a second, never ending it
					if _, err := io.WriteString(c, "X"); err != nil {
						return
					}
					<-time.After(time.Second)
				}
			},
			wantClosed: 5 * time.Second,
		},
		{
			name: "a slow body is cut at ReadTimeout",
			write: func(c net.Conn) {
				io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
				for range 100 {
					if _, err := io.WriteString(c, "x"); err != nil {
						return
					}
					<-time.After(time.Second)
				}
			},
			wantStatus: "HTTP/1.1 408 Request Timeout",
			wantClosed: 10 * time.Second,
		},
		{
			name:       "an idle keep-alive connection is closed at IdleTimeout",
			write:      func(c net.Conn) { io.WriteString(c, "GET /ok HTTP/1.1\r\nHost: a\r\n\r\n") },
			wantStatus: "HTTP/1.1 200 OK",
			wantClosed: 60 * time.Second,
		},
		{
			name:              "a client that does not read is cut at WriteTimeout",
			write:             func(c net.Conn) { io.WriteString(c, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n") },
			readAfter:         5 * time.Minute,
			wantWriteFailedAt: 30 * time.Second,
			wantClosed:        5 * time.Minute, // closed already when it first reads
		},
		{
			name:       "headers of 8 KiB pass",
			write:      func(c net.Conn) { io.WriteString(c, header(8<<10)) },
			wantStatus: "HTTP/1.1 200 OK",
			wantClosed: 60 * time.Second,
		},
		{
			name:       "headers of 32 KiB get 431",
			write:      func(c net.Conn) { io.WriteString(c, header(32<<10)) },
			wantStatus: "HTTP/1.1 431 Request Header Fields Too Large",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				var writeFailedAt time.Duration
				var mu sync.Mutex
				mux := http.NewServeMux()
				mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
				mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
					if _, err := io.ReadAll(r.Body); err != nil {
						w.WriteHeader(http.StatusRequestTimeout)
						return
					}
				})
				mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
					for range 100 {
						if _, err := io.WriteString(w, big); err != nil {
							mu.Lock()
							writeFailedAt = time.Since(start)
							mu.Unlock()
							return
						}
					}
				})
				srv := httpapi.NewServer("", mux)
				ln := newPipeListener()
				served := make(chan error, 1)
				go func() { served <- srv.Serve(ln) }()

				c := ln.dial()
				got := make(chan answer, 1)
				go func() {
					<-time.After(tc.readAfter)
					data, _ := io.ReadAll(c)
					got <- answer{data: string(data), closedAt: time.Since(start)}
				}()
				tc.write(c)
				var a answer
				select {
				case a = <-got:
				case <-time.After(10 * time.Minute):
					t.Fatal("the server kept the connection open for 10 minutes")
				}
				c.Close()
				srv.Close()
				<-served

				status, _, _ := strings.Cut(a.data, "\r\n")
				if tc.wantStatus != "" && status != tc.wantStatus || tc.wantStatus == "" && strings.HasPrefix(status, "HTTP/1.1 2") {
					t.Errorf("answer %q, want %q", status, tc.wantStatus)
				}
				if tc.wantClosed != 0 && a.closedAt != tc.wantClosed {
					t.Errorf("connection closed after %s, want %s", a.closedAt, tc.wantClosed)
				}
				mu.Lock()
				defer mu.Unlock()
				if writeFailedAt != tc.wantWriteFailedAt {
					t.Errorf("the handler's write failed after %s, want %s", writeFailedAt, tc.wantWriteFailedAt)
				}
			})
		})
	}
}
