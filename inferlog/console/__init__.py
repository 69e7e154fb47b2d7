"""``inferlog console``: a read-only web console over OpenSearch and the reconciliation (see :mod:`.app`)."""
