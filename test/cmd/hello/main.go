// Command hello is a stand-in workload for the demo: an HTTP server on
// --listen that answers every request with "hello from NAME", followed by
// ": BODY" when the request has a body.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	name := flag.String("name", "app", "name to answer with")
	flag.Parse()
	srv := &http.Server{
		Addr:              *listen,
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<10))
			if len(body) == 0 {
				fmt.Fprintf(w, "hello from %s\n", *name)
				return
			}
			fmt.Fprintf(w, "hello from %s: %s\n", *name, body)
		}),
	}
	log.Fatal(srv.ListenAndServe())
}
