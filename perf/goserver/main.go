// goserver is the Go net/http baseline for perf/run.sh: it serves a folder with http.FileServer
// (which uses sendfile(2) on Linux) and answers GET /plaintext with "Hello, World!".
//
//	goserver -root <dir> -addr 127.0.0.1:8083
package main

import (
	"flag"
	"log"
	"net/http"
	"os"
)

func main() {
	root := flag.String("root", ".", "folder to serve")
	addr := flag.String("addr", "127.0.0.1:8083", "address to listen on")
	flag.Parse()

	if info, err := os.Stat(*root); err != nil || !info.IsDir() {
		log.Fatalf("-root %q is not a directory", *root)
	}

	hello := []byte("Hello, World!")
	mux := http.NewServeMux()
	mux.HandleFunc("/plaintext", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(hello)
	})
	mux.Handle("/", http.FileServer(http.Dir(*root)))

	log.Printf("goserver serving %s on %s", *root, *addr)
	log.Fatal(http.ListenAndServe(*addr, mux))
}
