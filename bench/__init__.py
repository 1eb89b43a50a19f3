"""alarmd's benchmarks (``make bench``): workloads against alarmd and a reference peer on 127.0.0.1."""
