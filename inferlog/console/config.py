"""Settings of the console (``inferlog console --help``). It reads OpenSearch with the OpenSearch sink's settings
(``INFERLOG_INDEX_PREFIX``, ...), claim-checked bodies with the shared S3 settings, and honours the ingest's auth
settings (``INFERLOG_AUTH_TOKENS``, ``INFERLOG_AUTH_XFCC_TRUST_DOMAIN``) as the ingest reads them."""

from __future__ import annotations

from dataclasses import dataclass

from core.config import CommonConfig, env_name, setting
from core.errors import ConfigError


@dataclass(frozen=True)
class ConsoleConfig(CommonConfig):
    """Settings of the web console."""

    console_host: str = setting(
        "127.0.0.1", "Address the console listens on; it only reads, but shows payloads: expose it with auth tokens"
    )
    console_port: int = setting(8090, "Port of the console")
    console_reconcile_cache_s: float = setting(
        15.0, "Seconds the reconciliation page reuses its last result (it reads every topic and store)"
    )

    def validate(self) -> None:
        super().validate()
        if not 0 < self.console_port < 65536:
            raise ConfigError(f"{env_name('console_port')} must be a TCP port")
        if self.console_reconcile_cache_s < 0:
            raise ConfigError(f"{env_name('console_reconcile_cache_s')} must be >= 0")
