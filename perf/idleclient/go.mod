module splicetransport/perf/idleclient

go 1.19
