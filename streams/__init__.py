"""Streams: the Faust application that joins KServe request and response events into InferenceRecords.

- :mod:`streams.enrich`: pure functions from one or two logged events to an ``InferenceRecord`` dict and
  ``FailureSignal`` dicts (protocol sniffing, trace ids, annotations, model metadata).
- :mod:`streams.join`: the pure join state machine over a ``MutableMapping[str, bytes]`` (the Faust table),
  with per-partition event-time watermarks, expiry and in-band ticks.
- :mod:`streams.app`: the Faust wiring (one agent, a RocksDB table with a changelog, the expiry-marker topic).
- :mod:`streams.cli`: ``inferlog streams`` and ``inferlog metadata set``.
"""
