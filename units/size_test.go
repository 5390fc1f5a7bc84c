package units

import "testing"

func TestParseSize(t *testing.T) {
	good := map[string]Size{
		"4GiB": 4 * GiB, "4G": 4 * GiB, "4g": 4 * GiB, "4 GB": 4 * GiB, "512MiB": 512 * MiB,
		"1.5GiB": GiB + GiB/2, "10GiB": 10 * GiB, "1KiB": KiB, "4096": 4096, "0": 0, "2T": 2 * TiB,
	}
	for in, want := range good {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("%q: got %d %v, want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "GiB", "-1G", "4XB", "four", "1e400G", "NaNG"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestString(t *testing.T) {
	for s, want := range map[Size]string{4 * GiB: "4 GiB", 1536 * MiB: "1.5 GiB", 100: "100 B", 10 * KiB: "10 KiB"} {
		if got := s.String(); got != want {
			t.Errorf("%d: got %q, want %q", s, got, want)
		}
	}
}
