// Command nodebox is the one program inside the local node's images (there is no
// registry to pull from): the pod sandbox ("pause") and a small test workload.
//
//	nodebox pause          hold the pod's namespaces; reap children; exit on SIGTERM/SIGINT
//	nodebox serve PORT     answer HTTP: /healthz "ok", anything else "hello from HOSTNAME"
//	nodebox resolve NAME   print NAME's addresses (exit 1 if it does not resolve)
//	nodebox get URL        print the body of an HTTP GET (exit 1 unless 200)
//	nodebox api PATH       GET PATH from the apiserver as the pod's service account
//	                       (in-cluster token and CA); print the status code and body
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: nodebox pause|serve PORT|resolve NAME|get URL")
	}
	switch cmd, args := os.Args[1], os.Args[2:]; {
	case cmd == "pause":
		pause()
	case cmd == "serve" && len(args) == 1:
		serve(args[0])
	case cmd == "resolve" && len(args) == 1:
		resolve(args[0])
	case cmd == "get" && len(args) == 1:
		get(args[0])
	case cmd == "api" && len(args) == 1:
		api(args[0])
	default:
		fail("unknown command or arguments: %q", os.Args[1:])
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "nodebox: "+format+"\n", args...)
	os.Exit(1)
}

// pause is what a pod sandbox runs: as PID 1 of the pod it must reap orphans.
func pause() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

func serve(port string) {
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintf(w, "hello from %s\n", host) })
	fmt.Printf("nodebox serving on :%s\n", port)
	server := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
		<-stop
		_ = server.Shutdown(context.Background())
	}()
	if err := server.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fail("%v", err)
	}
}

func resolve(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, name)
	if err != nil {
		fail("%v", err)
	}
	for _, addr := range addrs {
		fmt.Println(addr)
	}
}

func get(url string) {
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		fail("%v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	os.Stdout.Write(body)
	if resp.StatusCode != http.StatusOK {
		fail("%s answered %s", url, resp.Status)
	}
}

// api is what an in-cluster client does: the service account's token and the
// cluster CA from the mounted volume, the apiserver at kubernetes.default.svc.
func api(path string) {
	const dir = "/var/run/secrets/kubernetes.io/serviceaccount/"
	token, err := os.ReadFile(dir + "token")
	if err != nil {
		fail("%v", err)
	}
	ca, err := os.ReadFile(dir + "ca.crt")
	if err != nil {
		fail("%v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		fail("no certificate in %sca.crt", dir)
	}
	client := http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}},
	}
	req, err := http.NewRequest(http.MethodGet, "https://kubernetes.default.svc"+path, nil)
	if err != nil {
		fail("%v", err)
	}
	req.Header.Set("Authorization", "Bearer "+string(token))
	resp, err := client.Do(req)
	if err != nil {
		fail("%v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Printf("%d\n%s", resp.StatusCode, body)
}
