"""The quality benchmark (``scripts/benchmark_quality.py``), one module per stage: data, training,
evaluation, report, ship; ``common`` holds the runs, the output folder and the helpers, ``cards`` the
model cards a run continues from."""
