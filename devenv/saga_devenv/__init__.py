"""Local development platform: a real Kubernetes control plane and the servers.

The machines this project is built on have no Docker and no kind, so the project
brings its own envtest-style control plane (etcd + kube-apiserver built from Go
modules, no kubelet) plus Postgres, Redis and NATS JetStream on loopback. The
same code serves `scripts/up` and the pytest fixtures, so what the tests run on
is exactly what a developer runs.
"""
