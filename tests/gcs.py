"""``gs://`` on loopback: a GCS emulator and the HTTPS proxy TensorFlow's GCS client needs.

Nothing here leaves 127.0.0.1. ``with FakeGcs(tmp_path) as gcs: gcs.env`` gives the
variables a process needs so that every GCS client in this project talks to the
emulator (PyPI ``gcp-storage-emulator``, in memory):

- google-cloud-storage, Beam's ``gcsio`` and gcsfs read ``STORAGE_EMULATOR_HOST``;
  ``NO_GCE_CHECK=true`` makes ``google.auth.default()`` fail at once instead of
  probing the GCE metadata server for ~20 s, and Beam then goes anonymous.
- TensorFlow's C++ GCS filesystem (``tf.io.gfile``, so TFDS) hard-codes
  ``https://{www,storage}.googleapis.com``. It honours ``HTTPS_PROXY``: the proxy here
  answers ``CONNECT`` with a throw-away certificate (``CURL_CA_BUNDLE``), decrypts, and
  forwards each request to the emulator with the few rewrites TF needs (see
  ``_ForwardHandler``). ``GOOGLE_AUTH_TOKEN_FOR_TESTING`` skips TF's OAuth.
"""

from __future__ import annotations

import contextlib
import datetime
import http
import http.client
import http.server
import json
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

HOSTS = ("storage.googleapis.com", "www.googleapis.com")


def _patch_emulator() -> None:
    """Two fixes to the emulator, applied once per process.

    - It crashes on zero-byte media uploads (``len(None)``): give it b"".
    - It ignores ``ifGenerationMatch`` on uploads; real GCS refuses the write with 412
      when the object's generation differs (``0``: the object must not exist), checked
      atomically. The work-dir lock relies on it, so the emulator does it here too.
    """
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    if getattr(objects, "_camsdd_patched", False):
        return
    media, multipart = objects._media_upload, objects._multipart_upload
    preconditions = threading.Lock()  # check and write as one step, as GCS does

    def precondition_met(request, storage, name) -> bool:
        wanted = request.query.get("ifGenerationMatch")
        if not wanted:
            return True
        try:
            current = str(storage.get_file_obj(request.params["bucket_name"], name)["generation"])
        except NotFound:
            current = "0"
        return current == wanted[0]

    def guarded(upload, name_of):
        def run(request, response, storage):
            with preconditions:
                if precondition_met(request, storage, name_of(request)):
                    return upload(request, response, storage)
            response.status = http.HTTPStatus.PRECONDITION_FAILED
            response.json({"error": {"code": 412, "message": "conditionNotMet"}})

        return run

    def media_upload(request, response, storage):
        if request.data is None:
            request._data = b""
        return media(request, response, storage)

    objects._media_upload = guarded(media_upload, lambda r: r.query["name"][0])
    objects._multipart_upload = guarded(
        multipart, lambda r: r.query["name"][0] if "name" in r.query else r.data["meta"]["name"]
    )
    objects._camsdd_patched = True


def _make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the GCS host names (also its own CA bundle)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "camsdd test GCS")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in HOSTS]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "gcs-test-ca.pem", folder / "gcs-test-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _ForwardHandler(http.server.BaseHTTPRequestHandler):
    """One decrypted TLS connection from TensorFlow, request by request, to the emulator.

    Rewrites: chunked request bodies are de-chunked (the emulator reads Content-Length);
    ``Transfer-Encoding: identity`` is dropped; upload ``Location``s come back as
    ``http://`` and are turned to ``https://``; ``GET …/storageLayout`` (which the
    emulator does not know) says the bucket has no hierarchical namespace, so TF
    renames directories object by object.
    """

    protocol_version = "HTTP/1.1"
    emulator: tuple[str, int]
    host: str

    def log_message(self, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self) -> None:
        body = self._body()
        if self.command == "GET" and self.path.split("?")[0].endswith("/storageLayout"):
            bucket = self.path.split("/b/", 1)[1].split("/")[0]
            payload = {
                "kind": "storage#storageLayout",
                "bucket": bucket,
                "hierarchicalNamespace": {"enabled": False},
            }
            return self._answer(200, [("Content-Type", "application/json")], payload)
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in ("transfer-encoding", "connection", "content-length", "host")
        }
        headers["Host"] = self.host
        headers["Content-Length"] = str(len(body))
        connection = http.client.HTTPConnection(*self.emulator, timeout=120)
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            answer = []
            for k, v in response.getheaders():
                if k.lower() in ("transfer-encoding", "connection", "content-length"):
                    continue
                if k.lower() == "location" and v.startswith("http://"):
                    v = "https://" + v[len("http://") :]
                answer.append((k, v))
            self._answer(response.status, answer, data)
        finally:
            connection.close()

    def _answer(self, status: int, headers: list, data: Any) -> None:
        if not isinstance(data, bytes):
            data = json.dumps(data).encode()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward  # noqa: N815


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    """``CONNECT host:443`` → TLS with the test certificate → ``_ForwardHandler``."""

    context: ssl.SSLContext
    emulator: tuple[str, int]

    def log_message(self, *args: Any) -> None:
        pass

    def do_CONNECT(self) -> None:  # noqa: N802
        host = self.path.split(":")[0]
        if host not in HOSTS:
            self.send_error(403, f"the test proxy only serves {HOSTS}")
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        try:
            tls = self.context.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError):
            self.close_connection = True
            return
        forward = type("Forward", (_ForwardHandler,), {"emulator": self.emulator, "host": host})
        with contextlib.suppress(OSError, ssl.SSLError):
            forward(tls, self.client_address, self.server)
        self.close_connection = True


class FakeGcs:
    """The emulator and the proxy, both on 127.0.0.1; ``env`` for client processes."""

    def __init__(self, folder: Path, buckets: tuple[str, ...] = ("bucket",)):
        self.folder = Path(folder)
        self.buckets = buckets
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> FakeGcs:
        from gcp_storage_emulator.server import create_server

        _patch_emulator()
        port = _free_port()
        emulator = create_server("127.0.0.1", port, in_memory=True)
        emulator.start()
        self._stack.callback(emulator.stop)
        self.emulator_url = f"http://127.0.0.1:{port}"
        cert, key = _make_certificate(self.folder)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        handler = type(
            "Proxy", (_ProxyHandler,), {"context": context, "emulator": ("127.0.0.1", port)}
        )
        proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        proxy.daemon_threads = True
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        self._stack.callback(proxy.server_close)
        self._stack.callback(proxy.shutdown)
        self.env = {
            "STORAGE_EMULATOR_HOST": self.emulator_url,
            "NO_GCE_CHECK": "true",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "HTTPS_PROXY": f"http://127.0.0.1:{proxy.server_address[1]}",
            "https_proxy": f"http://127.0.0.1:{proxy.server_address[1]}",
            "CURL_CA_BUNDLE": str(cert),
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "dummy",
            "GOOGLE_CLOUD_PROJECT": "test-project",
            "GCS_RETRY_CONFIG_MAX_RETRIES": "2",
        }
        for bucket in self.buckets:
            self.client().create_bucket(bucket)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def client(self):
        """An anonymous google-cloud-storage client on the emulator (for checks)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            credentials=AnonymousCredentials(),
            project="test-project",
            client_options={"api_endpoint": self.emulator_url},
        )

    def names(self, bucket: str, prefix: str = "") -> list[str]:
        return sorted(b.name for b in self.client().list_blobs(bucket, prefix=prefix))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
