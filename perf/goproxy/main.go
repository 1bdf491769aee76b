// goproxy is the Go peer of samples/TcpProxy for perf/proxy.sh: a TCP proxy that forwards each connection to
// an upstream with io.Copy both ways between two *net.TCPConn. Go moves those bytes with splice(2) (TCPConn's
// ReadFrom splices from another TCPConn since Go 1.11), through a pipe per copy; a FIN one way becomes a
// CloseWrite the other way.
//
//	goproxy -listen 127.0.0.1:18285 -upstream 127.0.0.1:18290
package main

import (
	"flag"
	"io"
	"log"
	"net"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18285", "address to accept clients on")
	upstream := flag.String("upstream", "", "address to forward each connection to")
	flag.Parse()
	if *upstream == "" {
		log.Fatal("-upstream is required")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	for {
		client, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go forward(client.(*net.TCPConn), *upstream)
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
