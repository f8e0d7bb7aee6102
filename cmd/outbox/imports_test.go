package main

import (
	"os/exec"
	"strings"
	"testing"
)

// goList runs `go list` with args and returns its lines.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).Output()
	if err != nil {
		t.Fatalf("go list %v: %v", args, err)
	}
	return strings.Fields(string(out))
}

// The product binary links no fault-injection or test tooling: those live
// in outbox-lab.
func TestTheProductBinaryLinksNoLabTooling(t *testing.T) {
	forbidden := []string{
		"github.com/Shopify/toxiproxy", "github.com/rs/zerolog", "github.com/gorilla/mux",
		"github.com/outbox-dev/outbox/checker", "github.com/outbox-dev/outbox/internal/lab",
		"github.com/outbox-dev/outbox/kafka/kafkatest", "github.com/outbox-dev/outbox/internal/testenv",
		"github.com/twmb/franz-go/pkg/kadm",
	}
	for _, dep := range goList(t, "-deps", ".") {
		for _, f := range forbidden {
			if strings.HasPrefix(dep, f) {
				t.Errorf("cmd/outbox links %s", dep)
			}
		}
	}
}

// Adapters implement the ports of package outbox; none imports the engine.
func TestNoAdapterImportsTheRelay(t *testing.T) {
	for _, line := range goList(t, "-f", "{{.ImportPath}}={{join .Imports \",\"}}",
		"../../store/...", "../../kafka", "../../dlq", "../../pgxoutbox", "../../sqloutbox", "../../mapping") {
		pkg, imports, _ := strings.Cut(line, "=")
		for _, imp := range strings.Split(imports, ",") {
			if imp == "github.com/outbox-dev/outbox/relay" {
				t.Errorf("%s imports the relay", pkg)
			}
		}
	}
}
