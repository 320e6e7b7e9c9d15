package main

import (
	"encoding/json"
	"log"
	"net/http"
	"sync"
	"time"
)

type counter struct {
	mu     sync.Mutex
	counts map[string]int
}

func newCounter() *counter {
	return &counter{counts: make(map[string]int)}
}

func (c *counter) inc(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts[key]++
	return c.counts[key]
}

func (c *counter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}
	return out
}

func logging(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		next.ServeHTTP(w, r)
		log.Printf("%s %s %v", r.Method, r.URL.Path, time.Since(start))
	})
}

func (c *counter) handleHit(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("key")
	if key == "" {
		http.Error(w, "missing key", http.StatusBadRequest)
		return
	}
	n := c.inc(key)
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(map[string]int{key: n}); err != nil {
		log.Println("encode:", err)
	}
}

func (c *counter) handleStats(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(c.snapshot())
}

func main() {
	c := newCounter()
	mux := http.NewServeMux()
	mux.HandleFunc("/hit", c.handleHit)
	mux.HandleFunc("/stats", c.handleStats)
	srv := &http.Server{Addr: ":8080", Handler: logging(mux), ReadTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
