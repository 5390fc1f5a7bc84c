// Command fakeapi serves a fake Anthropic Messages API on loopback, so
// `cowork ask` can be tried end to end without a real key or the internet
// (make mac-smoke uses it). It prints its URL on stdout, answers every
// request with -reply, and logs each request on stderr.
//
//	go run ./tools/fakeapi -reply "hi" &
//	ANTHROPIC_BASE_URL=http://127.0.0.1:PORT ANTHROPIC_API_KEY=sk-test cowork ask "say hi"
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"

	"github.com/coworkhq/cowork/internal/fakeapi"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	reply := flag.String("reply", "Hello from the fake Messages API.", "the answer to every request")
	flag.Parse()
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	api := fakeapi.New()
	api.Default = fakeapi.Reply{Text: *reply}
	fmt.Printf("http://%s\n", l.Addr())
	os.Stdout.Sync()
	log.Fatal(http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Printf("%s %s x-api-key=%t authorization=%t", r.Method, r.URL.Path, r.Header.Get("x-api-key") != "", r.Header.Get("authorization") != "")
		api.ServeHTTP(w, r)
	})))
}
