// goserver is the Go net/http baseline for perf/run.sh: it serves a folder with http.FileServer and
// answers GET /plaintext with "Hello, World!".
//
// The path a file response takes (checked with strace, see perf/README.md): http.ServeContent copies the
// file into the ResponseWriter, whose ReadFrom writes the headers and the first 512 bytes (read through a
// buffer, for content sniffing) with one write(2), then passes the rest to net.TCPConn.ReadFrom, which sends
// an *os.File with sendfile(2). Wrapping the ResponseWriter (or the file) would hide ReadFrom and make it
// copy everything through user space instead.
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

	log.Printf("goserver serving %s on %s (files: headers + first 512 bytes with write(2), the rest with sendfile(2))", *root, *addr)
	log.Fatal(http.ListenAndServe(*addr, mux))
}
