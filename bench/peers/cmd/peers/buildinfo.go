package main

import "runtime/debug"

// readBuildInfo lists the driver's dependencies and their versions.
func readBuildInfo() ([][2]string, bool) {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return nil, false
	}
	var out [][2]string
	for _, d := range info.Deps {
		out = append(out, [2]string{d.Path, d.Version})
	}
	return out, true
}
