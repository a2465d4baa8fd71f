"""The tables of docs/speed.md and docs/performance.md, written from benchmarks/results/."""

from tables import bench_csv, csv_table, num, register, table  # noqa: F401
