package agentcall

import (
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestLineReader(t *testing.T) {
	long := `{"error":"` + strings.Repeat("x", MaxLine) + `"}` + "\n"
	for _, c := range []struct {
		in   string
		want error // nil: a Reply with Error "ok"
		says string
	}{
		{`{"error":"ok"}` + "\n", nil, ""},
		{`{"error":"ok","newer_field":[1,2]}` + "\n", nil, ""}, // a newer agent's fields are ignored
		{"", io.EOF, ""},
		{`{"error":"ok"}`, io.ErrUnexpectedEOF, ""},
		{long, ErrLineTooLong, ""},
		{"\n", nil, "not the JSON expected"},
		{`{"error":"ok"} {}` + "\n", nil, "not the JSON expected"},
		{`{"error":1}` + "\n", nil, "not the JSON expected"},
		{`{"info":{"uptime_ms":1e30}}` + "\n", nil, "not the JSON expected"},
		{`{"info":{"uptime_ms":-1.5}}` + "\n", nil, "not the JSON expected"},
		{`{"info":{"process":{"goroutines":2147483648}}}` + "\n", nil, "not the JSON expected"},
	} {
		var rep Reply
		err := NewLineReader(strings.NewReader(c.in)).Read(&rep)
		switch {
		case c.says != "":
			if err == nil || !strings.Contains(err.Error(), c.says) {
				t.Errorf("%.40q: %v, want an error saying %q", c.in, err, c.says)
			}
		case c.want != nil:
			if !errors.Is(err, c.want) {
				t.Errorf("%.40q: %v, want %v", c.in, err, c.want)
			}
		case err != nil || rep.Error != "ok":
			t.Errorf("%.40q: %+v, %v", c.in, rep, err)
		}
	}
}

// A line of exactly MaxLine bytes, newline included, is read; one byte
// more is refused. AppendLine makes no line the reader would refuse.
func TestLineLimit(t *testing.T) {
	fill := func(n int) string { return `{"error":"` + strings.Repeat("x", n-len(`{"error":""}`)-1) + `"}` + "\n" }
	var rep Reply
	if err := NewLineReader(strings.NewReader(fill(MaxLine))).Read(&rep); err != nil {
		t.Errorf("a line of MaxLine bytes: %v", err)
	}
	if err := NewLineReader(strings.NewReader(fill(MaxLine + 1))).Read(&rep); !errors.Is(err, ErrLineTooLong) {
		t.Errorf("a line of MaxLine+1 bytes: %v", err)
	}
	if b, err := AppendLine(nil, &Reply{Error: strings.Repeat("x", MaxLine-len(`{"error":""}`)-1)}); err != nil || len(b) != MaxLine {
		t.Errorf("AppendLine at the limit: %d bytes, %v", len(b), err)
	}
	if _, err := AppendLine(nil, &Reply{Error: strings.Repeat("x", MaxLine)}); !errors.Is(err, ErrLineTooLong) {
		t.Errorf("AppendLine over the limit: %v", err)
	}
}

// The listener tells channels apart by one fixed-size head.
func TestPrefaceLength(t *testing.T) {
	if len(Preface) != 14 || !strings.HasSuffix(Preface, "\n") {
		t.Errorf("preface %q", Preface)
	}
}

// The share calls' requests and replies cross the wire as they left, and
// an empty reply member still marks the method's answer.
func TestShareRoundTrip(t *testing.T) {
	req := Request{Method: MethodShareRelease, Path: "/workspace", Force: true, Tag: "workspace"}
	b, err := AppendLine(nil, &req)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"method":"share_release","path":"/workspace","force":true,"tag":"workspace"}` + "\n"; string(b) != want {
		t.Errorf("request line %s; want %s", b, want)
	}
	var gotReq Request
	if err := NewLineReader(strings.NewReader(string(b))).Read(&gotReq); err != nil || !reflect.DeepEqual(gotReq, req) {
		t.Errorf("request %+v, %v", gotReq, err)
	}
	for _, rep := range []Reply{
		{ShareRelease: &ShareReleaseReply{Users: []ShareUser{{PID: 901, Comm: "claude"}, {PID: 77, Comm: "bash"}}, More: 3}},
		{ShareRelease: &ShareReleaseReply{Unmounted: true, NotMounted: true}},
		{ShareRelease: &ShareReleaseReply{}},
		{ShareMount: &ShareMountReply{}},
	} {
		b, err := AppendLine(nil, &rep)
		if err != nil {
			t.Fatal(err)
		}
		var got Reply
		if err := NewLineReader(strings.NewReader(string(b))).Read(&got); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if !reflect.DeepEqual(got, rep) {
			t.Errorf("%s: read back %+v; want %+v", b, got, rep)
		}
	}
	var got Reply
	if err := NewLineReader(strings.NewReader(`{"share_mount":{}}` + "\n")).Read(&got); err != nil || got.ShareMount == nil {
		t.Errorf("an empty share_mount member: %+v, %v", got, err)
	}
}
