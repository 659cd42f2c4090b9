//go:build tools

// Package tools pins nats-server (JetStream) for the local development servers.
package tools

import (
	_ "github.com/nats-io/nats-server/v2"
)
