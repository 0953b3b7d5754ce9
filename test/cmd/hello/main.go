// Command hello is a stand-in workload for the demo: an HTTP server on
// --listen that answers every request with "hello from NAME".
package main

import (
	"flag"
	"fmt"
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
			fmt.Fprintf(w, "hello from %s\n", *name)
		}),
	}
	log.Fatal(srv.ListenAndServe())
}
