// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3.
// It is the equivalent of etcd's own top-level main package, which lives in
// a module (go.etcd.io/etcd/v3) that cannot be required from outside.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
