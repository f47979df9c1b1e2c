module gmpsim/compare

go 1.19
