module splicetransport/perf/uploadserver

go 1.19
