module splicetransport/perf/gopeer

go 1.19
