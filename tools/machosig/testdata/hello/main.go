// Command hello is the smallest darwin program the signing tests and
// hack/check-signing.sh build, sign and verify; it is never run.
package main

import "fmt"

func main() { fmt.Println("hello from a signed cowork test binary") }
