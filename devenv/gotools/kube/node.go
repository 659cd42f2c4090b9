//go:build tools

package tools

// The node's commands (scripts/build-binaries.sh node), from the same module and
// go.mod as the apiserver so they share its Go build cache.
import (
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
