// idleclient opens N keep-alive connections to a server, sends one GET on each and reads the whole
// response (so the server has really accepted and served them), then holds them idle so that
// perf/run.sh can read the server's resident memory. It prints one line
//
//	READY held=<n> failed=<m> seconds=<s>
//
// and keeps the connections open until the file named by -release exists (or -max-hold passes),
// then closes them all and exits.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "server address")
	path := flag.String("path", "/plaintext", "path requested once on each connection")
	n := flag.Int("n", 10000, "connections to open")
	// A few hundred dials at once keeps every server's listen backlog (512 for Kestrel, 511 for nginx)
	// from overflowing, which would cost a one-second SYN retransmit.
	concurrency := flag.Int("concurrency", 256, "connections being opened at the same time")
	release := flag.String("release", "", "close the connections once this file exists")
	maxHold := flag.Duration("max-hold", 60*time.Second, "close the connections after this long in any case")
	ioTimeout := flag.Duration("timeout", 10*time.Second, "timeout for one dial or one request")
	flag.Parse()

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

func openAll(addr, path string, n, concurrency int, timeout time.Duration) ([]net.Conn, int, error) {
	var (
		mu       sync.Mutex
		conns    = make([]net.Conn, 0, n)
		failed   int
		firstErr error
		wg       sync.WaitGroup
		slots    = make(chan struct{}, concurrency)
	)
	for i := 0; i < n; i++ {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			c, err := openOne(addr, path, timeout)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			conns = append(conns, c)
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
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, addr); err != nil {
		c.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
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
	deadline := time.Now().Add(maxHold)
	for time.Now().Before(deadline) {
		if release != "" {
			if _, err := os.Stat(release); err == nil {
				return
			}
		}
		time.Sleep(poll)
	}
}
