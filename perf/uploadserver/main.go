// uploadserver is the Go net/http baseline for perf/uploads.sh: PUT /upload/{name} saves the body as
// <dir>/{name} the way a Go program usually does, io.Copy from the request body into an *os.File (a temporary
// file in the same folder, renamed into place once the whole body arrived, as the .NET sample does), and
// answers 201 with {"name","length"}.
//
// The path the bytes take: io.Copy finds that *os.File implements ReaderFrom; os.File.ReadFrom tries
// copy_file_range and splice only when the source is a file or a *net.TCPConn, and an http.Request.Body is
// neither, so it falls back to a 32 KiB buffer: read(2) from the socket, write(2) to the file.
//
//	uploadserver -dir <dir> -addr 127.0.0.1:18184 [-fsync]
package main

import (
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// The sample's name rule: one path segment of [A-Za-z0-9._-], not starting with a dot.
var validName = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$`)

func main() {
	dir := flag.String("dir", ".", "folder to save uploads in")
	addr := flag.String("addr", "127.0.0.1:18184", "address to listen on")
	fsync := flag.Bool("fsync", false, "fsync each file before the rename")
	flag.Parse()

	if info, err := os.Stat(*dir); err != nil || !info.IsDir() {
		log.Fatalf("-dir %q is not a directory", *dir)
	}

	http.HandleFunc("/upload/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut {
			http.Error(w, "PUT only", http.StatusMethodNotAllowed)
			return
		}
		name := strings.TrimPrefix(r.URL.Path, "/upload/")
		if !validName.MatchString(name) {
			http.Error(w, "bad upload name", http.StatusBadRequest)
			return
		}
		tmp, err := os.CreateTemp(*dir, "."+name+".*.upload")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		n, err := io.Copy(tmp, r.Body)
		if err == nil && *fsync {
			err = tmp.Sync()
		}
		if closeErr := tmp.Close(); err == nil {
			err = closeErr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), filepath.Join(*dir, name))
		}
		if err != nil {
			os.Remove(tmp.Name())
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"name": name, "length": n})
	})

	log.Printf("uploadserver saving PUT /upload/{name} into %s on %s", *dir, *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
