package cmdutil

import (
	"encoding/json"
	"io"
)

// PrintJSON writes v to w as indented JSON and a line break: what a
// command's --json prints.
func PrintJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
