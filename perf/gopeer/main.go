// gopeer holds the Go peers of the perf scripts; the first argument picks one (`gopeer MODE -h` lists its flags):
//
//	gopeer server -root <dir> -addr 127.0.0.1:8083          net/http file server (perf/run.sh)
//	gopeer idle -addr 127.0.0.1:8080 -n 10000 [-release F]  holds N idle keep-alive connections (perf/run.sh)
//	gopeer upload -dir <dir> -addr 127.0.0.1:18184          saves PUT /upload/{name} (perf/uploads.sh)
//	gopeer proxy -listen 127.0.0.1:18285 -upstream <addr>   TCP proxy (perf/proxy.sh)
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Each mode declares its flags and returns what to run once they are parsed.
var modes = map[string]func(fs *flag.FlagSet) func(){"server": server, "idle": idle, "upload": upload, "proxy": proxy}

func main() {
	if len(os.Args) < 2 || modes[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: gopeer server|idle|upload|proxy [flags]  (gopeer MODE -h lists its flags)")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("gopeer "+os.Args[1], flag.ExitOnError) // a bad flag exits 2, -h exits 0
	run := modes[os.Args[1]](fs)
	fs.Parse(os.Args[2:])
	run()
}

// must exits with status 1 and the error on stderr, as log.Fatal does, if err is not nil.
func must[T any](v T, err error) T {
	if err != nil {
		log.Fatal(err)
	}
	return v
}

func requireDir(flagName, path string) {
	if info, err := os.Stat(path); err != nil || !info.IsDir() {
		log.Fatalf("-%s %q is not a directory", flagName, path)
	}
}

// serve logs its start line, then serves until listening fails (status 1).
func serve(addr string, h http.Handler, format string, args ...any) {
	log.Printf(format, args...)
	log.Fatal(http.ListenAndServe(addr, h))
}

// server is the net/http baseline for perf/run.sh: a folder with http.FileServer, and GET /plaintext.
// A file response's path (checked with strace, see perf/README.md): http.ServeContent copies the file into the
// ResponseWriter, whose ReadFrom writes the headers and the first 512 bytes (read through a buffer, for content
// sniffing) in one write(2), then hands the rest to net.TCPConn.ReadFrom, which sends an *os.File with
// sendfile(2). Wrapping the ResponseWriter (or the file) would hide ReadFrom and copy everything through user space.
func server(fs *flag.FlagSet) func() {
	root := fs.String("root", ".", "folder to serve")
	addr := fs.String("addr", "127.0.0.1:8083", "address to listen on")
	return func() {
		requireDir("root", *root)
		hello := []byte("Hello, World!")
		mux := http.NewServeMux()
		mux.HandleFunc("/plaintext", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write(hello)
		})
		mux.Handle("/", http.FileServer(http.Dir(*root)))
		serve(*addr, mux, "goserver serving %s on %s (files: headers + first 512 bytes with write(2), the rest with sendfile(2))", *root, *addr)
	}
}

// idle opens N keep-alive connections, sends one GET on each and reads the whole response (so the server has
// really accepted and served them), then holds them idle so that perf/run.sh can read the server's memory. It
// prints one line, "READY held=<n> failed=<m> seconds=<s>", and holds the connections until the file named by
// -release exists (or -max-hold passes), then closes them all and exits.
func idle(fs *flag.FlagSet) func() {
	addr := fs.String("addr", "127.0.0.1:8080", "server address")
	path := fs.String("path", "/plaintext", "path requested once on each connection")
	n := fs.Int("n", 10000, "connections to open")
	// A few hundred dials at once keeps every server's listen backlog (512 for Kestrel, 511 for nginx) from
	// overflowing, which would cost a one-second SYN retransmit.
	concurrency := fs.Int("concurrency", 256, "connections being opened at the same time")
	release := fs.String("release", "", "close the connections once this file exists")
	maxHold := fs.Duration("max-hold", 60*time.Second, "close the connections after this long in any case")
	ioTimeout := fs.Duration("timeout", 10*time.Second, "timeout for one dial or one request")
	return func() {
		start := time.Now()
		conns, failed, firstErr := openAll(*addr, *path, *n, *concurrency, *ioTimeout)
		fmt.Printf("READY held=%d failed=%d seconds=%.1f\n", len(conns), failed, time.Since(start).Seconds())
		if firstErr != nil {
			fmt.Fprintf(os.Stderr, "idleclient: first error: %v\n", firstErr)
		}
		waitForRelease(*release, *maxHold)
		for _, c := range conns {
			c.Close()
		}
	}
}

func openAll(addr, path string, n, concurrency int, timeout time.Duration) (conns []net.Conn, failed int, firstErr error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	slots := make(chan struct{}, concurrency)
	for i := 0; i < n; i++ {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			c, err := openOne(addr, path, timeout)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				conns = append(conns, c)
			} else if failed++; firstErr == nil {
				firstErr = err
			}
		}()
	}
	wg.Wait()
	return conns, failed, firstErr
}

func openOne(addr, path string, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(timeout))
	var resp *http.Response
	if _, err = fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, addr); err == nil {
		if resp, err = http.ReadResponse(bufio.NewReader(c), nil); err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	if err == nil && resp.Close {
		err = fmt.Errorf("server closed the connection after the response")
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

func waitForRelease(release string, maxHold time.Duration) {
	const poll = 50 * time.Millisecond
	for deadline := time.Now().Add(maxHold); time.Now().Before(deadline); time.Sleep(poll) {
		if _, err := os.Stat(release); release != "" && err == nil {
			return
		}
	}
}

// upload is the net/http baseline for perf/uploads.sh: PUT /upload/{name} saves the body as <dir>/{name} the way
// a Go program usually does, io.Copy into an *os.File (a temporary file in the same folder, renamed into place once
// the whole body arrived, as the .NET sample does), and answers 201 with {"name","length"}. os.File.ReadFrom tries
// copy_file_range and splice only from a file or a *net.TCPConn, which an http.Request.Body is not, so the bytes
// go through a 32 KiB buffer: read(2) from the socket, write(2) to the file.
func upload(fs *flag.FlagSet) func() {
	dir := fs.String("dir", ".", "folder to save uploads in")
	addr := fs.String("addr", "127.0.0.1:18184", "address to listen on")
	return func() {
		requireDir("dir", *dir)
		// The sample's name rule: one path segment of [A-Za-z0-9._-], not starting with a dot.
		validName := regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$`)
		mux := http.NewServeMux()
		mux.HandleFunc("/upload/", func(w http.ResponseWriter, r *http.Request) {
			name := strings.TrimPrefix(r.URL.Path, "/upload/")
			if r.Method != http.MethodPut {
				http.Error(w, "PUT only", http.StatusMethodNotAllowed)
			} else if !validName.MatchString(name) {
				http.Error(w, "bad upload name", http.StatusBadRequest)
			} else if n, err := save(*dir, name, r.Body); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
			} else {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusCreated)
				json.NewEncoder(w).Encode(map[string]any{"name": name, "length": n})
			}
		})
		serve(*addr, mux, "uploadserver saving PUT /upload/{name} into %s on %s", *dir, *addr)
	}
}

func save(dir, name string, body io.Reader) (int64, error) {
	tmp, err := os.CreateTemp(dir, "."+name+".*.upload")
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(tmp, body) // no fsync, as nginx for client bodies and the sample with --upload-fsync false
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return n, err
}

// proxy is the Go peer of samples/TcpProxy for perf/proxy.sh: it forwards each connection to -upstream with
// io.Copy both ways between two *net.TCPConn, which Go moves with splice(2) through a pipe per copy (TCPConn's
// ReadFrom splices from another TCPConn since Go 1.11); a FIN one way becomes a CloseWrite the other way.
func proxy(fs *flag.FlagSet) func() {
	listen := fs.String("listen", "127.0.0.1:18285", "address to accept clients on")
	upstream := fs.String("upstream", "", "address to forward each connection to")
	return func() {
		if *upstream == "" {
			log.Fatal("-upstream is required")
		}
		ln := must(net.Listen("tcp", *listen))
		for {
			go forward(must(ln.Accept()).(*net.TCPConn), *upstream)
		}
	}
}

func forward(client *net.TCPConn, upstream string) {
	defer client.Close()
	conn, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	server := conn.(*net.TCPConn)
	defer server.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(server, client)
		server.CloseWrite()
		close(done)
	}()
	io.Copy(client, server)
	client.CloseWrite()
	<-done
}
