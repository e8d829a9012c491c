module github.com/ctdoctor/ctdoctor

go 1.24.0

require (
	github.com/dchest/siphash v1.2.3
	github.com/spf13/cobra v1.10.2
	golang.org/x/sys v0.38.0
)

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
)
