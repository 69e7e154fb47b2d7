"""streams.outputs: the barrier's "everything sent so far is on the broker" (no broker needed for the failure)."""

from __future__ import annotations

import pytest

from core import config
from streams.config import StreamsConfig
from streams.errors import OutputError
from streams.outputs import Outputs


async def test_drain_raises_when_an_output_was_not_delivered() -> None:
    # nothing listens on port 1: the record times out in librdkafka and drain() must say so, so that the
    # worker writes no join state and commits no offset after it
    cfg = config.load(StreamsConfig, overrides={"kafka_bootstrap": "127.0.0.1:1"})
    out = Outputs(cfg, delivery_timeout_s=1.0)
    out.send("t.outputs", b"k", b"v", 0, [("h", b"1")])
    assert out.pending == 1
    with pytest.raises(OutputError, match=r"delivery failed|not delivered"):
        await out.drain()
    assert out.pending == 0


async def test_drain_without_outputs_returns_at_once() -> None:
    cfg = config.load(StreamsConfig, overrides={"kafka_bootstrap": "127.0.0.1:1"})
    out = Outputs(cfg, delivery_timeout_s=1.0)
    await out.drain()  # nothing sent: no flush, no error


def test_faust_gets_the_clusters_credentials() -> None:
    import faust

    from streams.app import faust_credentials

    plain = config.load(StreamsConfig)
    assert faust_credentials(plain) is None
    sasl = config.load(
        StreamsConfig,
        overrides={"kafka_options": "security.protocol=SASL_SSL,sasl.mechanism=PLAIN,sasl.username=u,sasl.password=p"},
    )
    creds = faust_credentials(sasl)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.protocol.value) == ("u", "p", "SASL_SSL")
