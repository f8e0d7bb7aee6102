package main

import (
	"context"
	"os"
	"strings"
)

// storeHandle is the store opened by the CLI's one-shot commands.
type storeHandle struct{ store backend }

func (h *storeHandle) Close() error { return h.store.Close() }

func openHandle(ctx context.Context, cfg config) (*storeHandle, error) {
	path, err := parseStoreURL(cfg.Store)
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(cfg.Store, "sqlite://") {
		if _, err := os.Stat(path); err != nil {
			return nil, usagef("--store %s: %v (run outbox migrate or outbox serve first)", cfg.Store, err)
		}
	}
	s, err := openStore(ctx, cfg, newLogger(cfg, os.Stderr))
	if err != nil {
		return nil, err
	}
	return &storeHandle{store: s}, nil
}
