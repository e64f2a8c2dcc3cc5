"""Real services for the scale-out tests, each on 127.0.0.1 with bounded start-up and a guaranteed stop:
an S3 API (moto's server mode), a throwaway PostgreSQL cluster, an MLflow tracking server, a two-node Ray cluster.

Every starter is a context manager: the process runs in its own session (process group), and the exit
terminates that group (SIGTERM, then SIGKILL after a grace period), so nothing outlives the test."""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float, log: Path | None = None) -> None:
    """Until something accepts on 127.0.0.1:port; fails naming the service if it died or took too long."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}: {_tail(log)}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not listening on {HOST}:{port} after {timeout:.0f} s: {_tail(log)}")


def _tail(log: Path | None, n: int = 1500) -> str:
    return log.read_text(errors="replace")[-n:] if log and log.is_file() else ""


def stop(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """Terminate the process group the service was started in; SIGKILL whatever is left after `grace` s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    end = time.monotonic() + grace
    while time.monotonic() < end and _group_alive(proc.pid):
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def spawn(cmd: list[str], log: Path, env: dict | None = None, user: str | None = None,
          stdin=subprocess.DEVNULL) -> subprocess.Popen:
    """Start cmd in a new session (its own process group), stdout+stderr to log; as `user` if given (root only)."""
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=stdin,
                                env={**os.environ, **(env or {})}, start_new_session=True, **as_user(user))


def as_user(user: str | None) -> dict:
    """Popen arguments that drop root to `user` (its own group, no supplementary groups)."""
    if not user:
        return {}
    pw = pwd.getpwnam(user)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


# ---------------------------------------------------------------- S3 (moto server mode)
@contextlib.contextmanager
def s3_server(workdir: Path, buckets: tuple[str, ...] = ()) -> Iterator[str]:
    """moto's S3-compatible server on 127.0.0.1; yields the endpoint URL; S3_ENV holds the credentials."""
    port = free_port()
    log = workdir / "moto.log"
    proc = spawn([str(BIN / "moto_server"), "-H", HOST, "-p", str(port)], log, env=S3_ENV)
    try:
        wait_port(port, proc, "moto_server", 60, log)
        url = f"http://{HOST}:{port}"
        if buckets:
            import boto3

            s3 = boto3.client("s3", endpoint_url=url, **_boto_creds())
            for b in buckets:
                s3.create_bucket(Bucket=b)
        yield url
    finally:
        stop(proc)


def _boto_creds() -> dict:
    return {"aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
            "region_name": S3_ENV["AWS_DEFAULT_REGION"]}


def s3_keys(url: str, bucket: str, prefix: str = "") -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=url, **_boto_creds())
    keys, token = [], None
    while True:
        kw = {"Bucket": bucket, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
        page = s3.list_objects_v2(**kw)
        keys += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return keys
        token = page["NextContinuationToken"]


# ---------------------------------------------------------------- PostgreSQL (throwaway cluster)
def pg_bin(name: str) -> str | None:
    """Debian puts the server programs in /usr/lib/postgresql/<major>/bin (not on PATH); newest major wins."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return found[-1] if found else shutil.which(name)


def pg_user() -> str | None:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` user (Debian's package creates it)
    or else `nobody` (Popen's user/group: no runuser or sudo needed); as any other user, as that user (None)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


@contextlib.contextmanager
def postgres(workdir: Path, database: str = "mlflow") -> Iterator[str]:
    """initdb a cluster in a fresh temp dir, postgres on 127.0.0.1:<free port> with its unix socket in the same
    dir, trust auth; yields a SQLAlchemy URL (postgresql+psycopg2://<user>@127.0.0.1:<port>/<database>)."""
    initdb, server = pg_bin("initdb"), pg_bin("postgres")
    if not initdb or not server:
        raise RuntimeError("PostgreSQL server programs not found (apt-get install postgresql; `make setup` does it)")
    user = pg_user()
    # A short path of its own: the unix socket path must stay under ~100 bytes, and the server user must own it.
    root = Path(tempfile.mkdtemp(prefix="stemsift-pg-"))
    data, log = root / "data", root / "server.log"
    owner = pwd.getpwnam(user) if user else None
    if owner:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    role = user or pwd.getpwuid(os.geteuid()).pw_name
    proc = None
    try:
        out = subprocess.run([initdb, "-D", str(data), "-U", role, "--auth=trust", "-E", "UTF8",
                              "--no-instructions"], capture_output=True, text=True, timeout=120,
                             cwd=root, **as_user(user))
        if out.returncode:
            raise RuntimeError(f"initdb failed: {out.stderr.strip()[-800:]}")
        port = free_port()
        proc = spawn([server, "-D", str(data), "-p", str(port), "-c", f"listen_addresses={HOST}",
                      "-c", f"unix_socket_directories={root}", "-c", "fsync=off", "-c", "max_connections=50"],
                     workdir / "postgres.log", user=user)
        wait_port(port, proc, "postgres", 60, workdir / "postgres.log")
        psql = pg_bin("psql")
        for _ in range(50):  # accepting TCP precedes accepting logins by a moment
            out = subprocess.run([psql, "-h", HOST, "-p", str(port), "-U", role, "-d", "postgres", "-c",
                                  f"CREATE DATABASE {database}"], capture_output=True, text=True, timeout=30)
            if out.returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"CREATE DATABASE failed: {out.stderr.strip()}")
        yield f"postgresql+psycopg2://{role}@{HOST}:{port}/{database}"  # SQLAlchemy 2.1 defaults to psycopg 3
    finally:
        if proc is not None:
            # SIGINT = PostgreSQL's "fast" shutdown (SIGTERM = "smart" waits for clients to leave)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def psql(url: str, sql: str) -> str:
    """Run one statement with psql (unaligned, tuples only) against a postgres() URL."""
    from urllib.parse import urlparse

    u = urlparse(url)
    out = subprocess.run([pg_bin("psql"), "-h", u.hostname, "-p", str(u.port), "-U", u.username, "-d",
                          u.path.lstrip("/"), "-At", "-c", sql], capture_output=True, text=True, timeout=30)
    if out.returncode:
        raise RuntimeError(f"psql: {out.stderr.strip()}")
    return out.stdout.strip()


# ---------------------------------------------------------------- MLflow tracking server
@contextlib.contextmanager
def mlflow_server(workdir: Path, backend_uri: str, artifacts: str, s3_url: str) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 with a database backend and proxied artifacts (--artifacts-destination)
    on the S3 server; clients need no S3 credentials. Yields the tracking URI."""
    port = free_port()
    log = workdir / "mlflow-server.log"
    # No job runner: its 7 huey consumer processes serve MLflow's GenAI jobs, which stemsift does not use.
    env = {**S3_ENV, "MLFLOW_S3_ENDPOINT_URL": s3_url, "MLFLOW_DISABLE_TELEMETRY": "true",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = spawn([str(BIN / "mlflow"), "server", "--host", HOST, "--port", str(port), "--workers", "2",
                  "--backend-store-uri", backend_uri, "--artifacts-destination", artifacts], log, env=env)
    try:
        wait_port(port, proc, "mlflow server", 120, log)
        yield f"http://{HOST}:{port}"
    finally:
        stop(proc)


# ---------------------------------------------------------------- Ray (head + one worker node)
RAY_ENV = {
    # On Linux Ray rewrites 127.0.0.1 into the machine's public IP and then listens on every interface; with
    # this switch off it keeps the node IP 127.0.0.1 and binds loopback only (as on macOS).
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}


@contextlib.contextmanager
def ray_cluster(workdir: Path, nodes: int = 2, cpus_per_node: int = 1) -> Iterator[str]:
    """A head and nodes-1 worker nodes (separate raylets, real processes) on 127.0.0.1, started by
    tests/ray_cluster.py with Ray's own ray.cluster_utils.Cluster; yields the GCS address for ray.init."""
    log = workdir / "ray-cluster.log"
    proc = spawn([sys.executable, str(Path(__file__).with_name("ray_cluster.py")), str(nodes), str(cpus_per_node)],
                 log, env=RAY_ENV, stdin=subprocess.PIPE)
    try:
        end = time.monotonic() + 120
        address = None
        while time.monotonic() < end and address is None:
            if proc.poll() is not None:
                raise RuntimeError(f"ray cluster exited with {proc.returncode}: {_tail(log)}")
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("RAY_ADDRESS="):
                    address = line.split("=", 1)[1].strip()
            time.sleep(0.3)
        if address is None:
            raise TimeoutError(f"ray cluster not up after 120 s: {_tail(log)}")
        yield address
    finally:
        with contextlib.suppress(BrokenPipeError, OSError):
            proc.stdin.close()  # the helper shuts the cluster down when its stdin closes
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        stop(proc)
