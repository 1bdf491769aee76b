module splicetransport/perf/goserver

go 1.19
