package tracing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// ProviderConfig configures NewTracerProvider.
type ProviderConfig struct {
	// Endpoint is the OTLP/HTTP base URL of a collector
	// ("http://collector:4318"); spans go to Endpoint + "/v1/traces".
	// Empty: the exporter reads OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
	// OTEL_EXPORTER_OTLP_ENDPOINT (and their _HEADERS, _TIMEOUT, ...).
	Endpoint string
	// ServiceName names the process in its spans (default "outbox");
	// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override it.
	ServiceName string
	// Sampler decides which traces are kept (default: the parent's
	// decision, so a writer's sampled trace is followed and others not;
	// root spans are sampled).
	Sampler sdktrace.Sampler
	// Options are appended last, for the exporter's TLS or headers.
	Options []otlptracehttp.Option
}

// NewTracerProvider returns an SDK tracer provider that batches spans and
// exports them by OTLP/HTTP (protobuf). Call its Shutdown when done, to
// flush what is buffered.
func NewTracerProvider(ctx context.Context, cfg ProviderConfig) (*sdktrace.TracerProvider, error) {
	var opts []otlptracehttp.Option
	if cfg.Endpoint != "" {
		opts = append(opts, otlptracehttp.WithEndpointURL(strings.TrimSuffix(cfg.Endpoint, "/")+"/v1/traces"))
	}
	exp, err := otlptracehttp.New(ctx, append(opts, cfg.Options...)...)
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP/HTTP exporter: %w", err)
	}
	if cfg.ServiceName == "" {
		cfg.ServiceName = "outbox"
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(cfg.ServiceName)))
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	// The environment (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) wins.
	if env, err := resource.New(ctx, resource.WithFromEnv()); err == nil {
		if merged, err := resource.Merge(res, env); err == nil {
			res = merged
		}
	}
	if cfg.Sampler == nil {
		cfg.Sampler = sdktrace.ParentBased(sdktrace.AlwaysSample())
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res), sdktrace.WithSampler(cfg.Sampler)), nil
}

// errDisabled: no endpoint, OTEL_SDK_DISABLED or OTEL_TRACES_EXPORTER=none.
var errDisabled = errors.New("tracing disabled")

// ProviderFromEnv returns NewTracerProvider configured by the standard
// variables when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, and nil, nil when neither is
// (or OTEL_SDK_DISABLED=true, or OTEL_TRACES_EXPORTER=none): tracing is
// off unless configured. OTEL_TRACES_EXPORTER other than otlp, and
// OTEL_EXPORTER_OTLP_PROTOCOL other than http/protobuf, are refused.
//
// serviceName is the default service.name (OTEL_SERVICE_NAME overrides it).
func ProviderFromEnv(ctx context.Context, serviceName string) (*sdktrace.TracerProvider, error) {
	if err := envEnabled(); err != nil {
		if errors.Is(err, errDisabled) {
			return nil, nil
		}
		return nil, err
	}
	return NewTracerProvider(ctx, ProviderConfig{ServiceName: serviceName})
}

func envEnabled() error {
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return errDisabled
	}
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return errDisabled
	}
	switch e := strings.ToLower(os.Getenv("OTEL_TRACES_EXPORTER")); e {
	case "", "otlp":
	case "none":
		return errDisabled
	default:
		return fmt.Errorf("tracing: OTEL_TRACES_EXPORTER=%s is not supported (otlp or none)", e)
	}
	for _, v := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := os.Getenv(v); p != "" {
			if p != "http/protobuf" {
				return fmt.Errorf("tracing: %s=%s is not supported (http/protobuf)", v, p)
			}
			break
		}
	}
	return nil
}
