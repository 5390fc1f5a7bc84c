package fakevz

import "testing"

func TestNothing(t *testing.T) {}
