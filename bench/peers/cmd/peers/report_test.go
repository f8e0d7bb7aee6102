package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// A Go runtime setting in the driver's environment reaches every relay,
// the baselines too: the report says so, and says none when there is none.
func TestTheReportNamesTheGoSettingsTheRelaysInherit(t *testing.T) {
	b, err := os.ReadFile("../../results/onecpu.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{nil, "inherits from the driver's environment: none\n"},
		{map[string]string{"GOMAXPROCS": "1", "GOGC": "50"}, "inherits from the driver's environment: GOGC=50, GOMAXPROCS=1\n"},
	} {
		var rep report
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatal(err)
		}
		rep.Conditions.InheritedEnv = tc.env
		if md := markdown(&rep); !strings.Contains(md, tc.want) {
			t.Fatalf("the report's conditions do not say %q:\n%s", tc.want, md[strings.Index(md, "### Conditions"):])
		}
	}
}
