package fakeapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A retried request (the same messages again) gets the same answer and
// leaves the script for the next new request.
func TestRetryGetsTheSameAnswer(t *testing.T) {
	api := New(Reply{Text: "first"}, Reply{Text: "second"})
	srv := httptest.NewServer(api)
	defer srv.Close()
	ask := func(text string) string {
		t.Helper()
		body := `{"model":"m","stream":false,"messages":[{"role":"user","content":"` + text + `"}]}`
		resp, err := http.Post(srv.URL+"/v1/messages", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m struct {
			Content []struct{ Text string } `json:"content"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || len(m.Content) != 1 {
			t.Fatalf("answer: %v %+v", err, m)
		}
		return m.Content[0].Text
	}
	got := []string{ask("hi"), ask("hi"), ask("and now?")}
	if got[0] != "first" || got[1] != "first" || got[2] != "second" {
		t.Errorf("answers %q, want first, first (the retry), second", got)
	}
	var repeats []bool
	for _, r := range api.Requests() {
		repeats = append(repeats, r.Repeat)
	}
	if len(repeats) != 3 || repeats[0] || !repeats[1] || repeats[2] {
		t.Errorf("repeat marks %v, want [false true false]", repeats)
	}
}
