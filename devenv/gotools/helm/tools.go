//go:build tools

// Package tools pins the Helm CLI used to render and validate charts/.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
