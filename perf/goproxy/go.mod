module splicetransport/perf/goproxy

go 1.19
