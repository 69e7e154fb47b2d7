"""inferlog: a durable pipeline for KServe inference payload logs.

This package is the top layer: the ``inferlog`` command line and the operator tools (replay, tail, stats,
analytics, topic and metadata admin). Below it are the stages (``ingest``, ``streams``, ``sinks``), the record
shapes (``schemas``) and the shared kernel (``core``). The local stack of real servers for development is a
package of its own (``deploy/local``, ``inferlog_stack``), not part of this distribution.
"""

__version__ = "0.1.0"
