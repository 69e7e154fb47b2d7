// etcd for the manifest check: the same entry point as the released etcd binary (etcdmain), built here
// from the Go module proxy because no release binary can be downloaded on this machine.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
