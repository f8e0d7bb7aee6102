package dlq

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/outbox-dev/outbox/outbox"
	"github.com/outbox-dev/outbox/retry"
)

// Webhook posts Slack-compatible JSON ({"text": ...}) to a URL, retrying
// transient failures (network errors, 429, 5xx).
type Webhook struct {
	url    string
	client *http.Client
	policy retry.Policy
}

// NewWebhook validates rawURL (http or https).
func NewWebhook(rawURL string) (*Webhook, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("dlq: alert webhook URL must be http(s)://host/...")
	}
	return &Webhook{
		url:    rawURL,
		client: &http.Client{Timeout: 5 * time.Second},
		policy: retry.Policy{MaxAttempts: 4, InitialDelay: 200 * time.Millisecond, Multiplier: 2, MaxDelay: 2 * time.Second, Jitter: 0.2},
	}, nil
}

type slackMessage struct {
	Text string `json:"text"`
}

// Notify posts one alert.
func (h *Webhook) Notify(ctx context.Context, dl outbox.DeadLetter) error {
	text := fmt.Sprintf(":rotating_light: outbox dead letter #%d: %s event %s of %s (sequence %d) failed: %s",
		dl.ID, dl.Message.Type, dl.Message.ID, dl.Message.Key(), dl.Message.Sequence, dl.Error)
	if dl.ParkedBehind != "" {
		text = fmt.Sprintf(":warning: outbox: %s event %s of %s parked behind %s",
			dl.Message.Type, dl.Message.ID, dl.Message.Key(), dl.ParkedBehind)
	}
	body, _ := json.Marshal(slackMessage{Text: text})
	_, err := h.policy.Do(ctx, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
		if err != nil {
			return outbox.Permanent(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := h.client.Do(req)
		if err != nil {
			// The URL carries the webhook's secret: keep it out of errors.
			var uerr *url.Error
			if errors.As(err, &uerr) {
				return fmt.Errorf("post alert: %w", uerr.Err)
			}
			return err
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		switch {
		case resp.StatusCode < 300:
			return nil
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
			return fmt.Errorf("webhook answered %s", resp.Status)
		default:
			return outbox.Permanent(fmt.Errorf("webhook answered %s", resp.Status))
		}
	}, nil)
	if err != nil {
		return fmt.Errorf("dlq: alert webhook: %w", err)
	}
	return nil
}
