//go:build tools

// Package tools pins crictl, for looking at the local node's containers.
package tools

import _ "sigs.k8s.io/cri-tools/cmd/crictl"
