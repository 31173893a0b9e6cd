"""What `bigbird convert` and `bigbird bench` run, and the tiny random checkpoints that the demo, the tests and
the benchmark build offline."""
