"""A real nginx in front of a real server, configured with the example in docs/deploy.md.

The upstream and server blocks are read from the documentation itself (the fenced `nginx` block
after the marker `<!-- nginx example: tests/test_nginx.py -->`), so the example operators copy is
the one the tests run. Only the listen address, the certificate paths and the upstream's ports are
filled in; each of
those must appear in the example as written, or the test fails instead of testing something else.
nginx runs as a child process with its own prefix, pid file and logs in a temporary folder.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
MARKER = "<!-- nginx example: tests/test_nginx.py -->"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# What the documented example says, and what the test puts in its place.
DOC_LISTEN = "listen 443 ssl;"
DOC_CERT = "/etc/letsencrypt/live/chat.example.com/fullchain.pem"
DOC_KEY = "/etc/letsencrypt/live/chat.example.com/privkey.pem"
# The upstream's two processes.
DOC_UPSTREAMS = ("server 127.0.0.1:8000 ", "server 127.0.0.1:8001 ")


def require_nginx() -> str:
    """The nginx binary; CI must have it (.ci/run installs it), elsewhere the test skips."""
    if not Path(NGINX).exists():
        if os.environ.get("CI"):
            pytest.fail("nginx is missing: .ci/run installs it with apt-get")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    return NGINX


def documented_server_block() -> str:
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    found = re.search(re.escape(MARKER) + r"\s*```nginx\n(.*?)```", text, re.DOTALL)
    assert found, f"docs/deploy.md lost its tested nginx example (marker {MARKER!r})"
    return found.group(1)


def fill_in(block: str, *, port: int, cert: Path, key: Path, upstream_ports: list[int]) -> str:
    """The documented block with this test's ports and files; every placeholder must be there.
    The upstream's processes get `upstream_ports` in turn (one port: every line names it)."""
    for placeholder in (DOC_LISTEN, DOC_CERT, DOC_KEY, *DOC_UPSTREAMS):
        assert placeholder in block, f"the nginx example no longer contains {placeholder!r}"
    block = (block.replace(DOC_LISTEN, f"listen 127.0.0.1:{port} ssl;")
             .replace(DOC_CERT, str(cert)).replace(DOC_KEY, str(key)))
    for n, upstream in enumerate(DOC_UPSTREAMS):
        block = block.replace(upstream, f"server 127.0.0.1:{upstream_ports[n % len(upstream_ports)]} ")
    return block


def make_certificate(folder: Path, names: list[str]) -> tuple[Path, Path]:
    """A self-signed certificate for `names` (and 127.0.0.1), valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.now(UTC)
    alt = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def client_tls(cert: Path) -> ssl.SSLContext:
    """A client context that trusts only the test's certificate, with hostname checks on."""
    return ssl.create_default_context(cafile=str(cert))


@dataclass
class Nginx:
    """nginx with the documented server block, plus any extra server blocks the test needs."""

    folder: Path
    upstream_port: int
    more_upstream_ports: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=lambda: ["localhost"])
    extra_servers: str = ""
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    cert: Path | None = None

    def config(self) -> str:
        assert self.cert is not None
        key = self.folder / "key.pem"
        server = fill_in(documented_server_block(), port=self.port, cert=self.cert, key=key,
                         upstream_ports=[self.upstream_port, *self.more_upstream_ports])
        tmp = self.folder / "tmp"
        # One foreground process, no user switch: everything stays in the test's folder.
        return f"""
daemon off;
master_process off;
pid {self.folder}/nginx.pid;
error_log {self.folder}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {self.folder}/access.log;
    default_type text/html;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{server}
{self.extra_servers}
}}
"""

    def start(self) -> Nginx:
        binary = require_nginx()
        from .support import free_port

        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "tmp").mkdir(exist_ok=True)
        if self.cert is None:
            self.cert, _ = make_certificate(self.folder, self.names)
        if not self.port:
            self.port = free_port()
        conf = self.folder / "nginx.conf"
        conf.write_text(self.config(), encoding="utf-8")
        self.process = subprocess.Popen(
            [binary, "-p", str(self.folder), "-e", str(self.folder / "error.log"), "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("nginx exited:\n" + self.log())
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("nginx did not start:\n" + self.log())

    def log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish requests, then exit
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
