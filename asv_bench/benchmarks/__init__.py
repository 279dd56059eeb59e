"""asv benchmarks of trio-foundation (see ``asv_bench/asv.conf.json``)."""
