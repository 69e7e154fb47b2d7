"""The one way inferlog makes an S3 client: the configured endpoint, region and keys, path-style addressing
(SeaweedFS, MinIO and most S3-compatible stores need it; AWS accepts it), bounded timeouts."""

from __future__ import annotations

from typing import Any

from core.config import CommonConfig


def client(
    cfg: CommonConfig,
    *,
    attempts: int = 3,
    connect_timeout_s: float = 5,
    read_timeout_s: float = 60,
    pool: int = 16,
) -> Any:
    """A boto3 S3 client for ``cfg``. ``attempts`` counts botocore's own retries of throttling and 5xx."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=cfg.s3_endpoint or None,
        region_name=cfg.s3_region,
        aws_access_key_id=cfg.s3_access_key or None,
        aws_secret_access_key=cfg.s3_secret_key or None,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": attempts, "mode": "standard"},
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            max_pool_connections=pool,
        ),
    )


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` → (``bucket``, ``some/key``)."""
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return bucket, key


def arrow_filesystem(cfg: CommonConfig) -> Any:
    """A ``pyarrow.fs.S3FileSystem`` for the configured endpoint, region and keys (for Parquet datasets)."""
    from urllib.parse import urlparse

    import pyarrow.fs as pafs

    kwargs: dict[str, Any] = {
        "access_key": cfg.s3_access_key or None,
        "secret_key": cfg.s3_secret_key or None,
        "region": cfg.s3_region,
    }
    if cfg.s3_endpoint:
        u = urlparse(cfg.s3_endpoint)
        kwargs.update(endpoint_override=u.netloc, scheme=u.scheme or "http")
    return pafs.S3FileSystem(**kwargs)
