"""``warmdb bench`` and ``warmdb probe``: what a connect and a query cost, per driver and pattern.

- :mod:`~warmdb.bench.command`: the ``warmdb bench`` command line;
- :mod:`~warmdb.bench.probe`: ``warmdb probe``, where the time of one connect goes;
- :mod:`~warmdb.bench.matrix`: the in-process patterns, interleaved;
- :mod:`~warmdb.bench.cold`: cold starts, a fresh process per sample;
- :mod:`~warmdb.bench.concurrency`: seed 002's concurrent workload;
- :mod:`~warmdb.bench.stats`, :mod:`~warmdb.bench.targets`, :mod:`~warmdb.bench.report`:
  pure statistics, targets and rendering; :mod:`~warmdb.bench.plot` draws the chart.

``docs/bench.md`` explains how to read the output.
"""
