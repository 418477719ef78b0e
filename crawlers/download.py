"""The fetch stage's downloader: one URL in, image bytes out, or a reason.

* Only ``http`` and ``https``. Host names are resolved first and loopback,
  private, link-local, multicast and reserved addresses are refused (no SSRF
  into a cloud metadata service or an intranet) unless explicitly allowed.
* Redirects are followed by hand, at most ``max_redirects`` hops, each hop
  checked the same way; a loop is named as such.
* The body is streamed with a size cap: a server that sends more than
  ``max_bytes`` (or announces it in Content-Length) is cut off.
* ``X-Robots-Tag: noai`` / ``noimageai`` (as img2dataset honours) drop the image.
* The first bytes are sniffed for an image signature; Content-Type is
  recorded but not trusted (servers send ``text/html`` for JPEGs and the reverse).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import urllib.parse

import requests

from crawlers.http import HttpError, PoliteClient
from pipeline.core import images
from pipeline.core.errors import RecordError

MAX_BYTES = 20 * 1024 * 1024
MAX_REDIRECTS = 5
OPT_OUT_DIRECTIVES = ("noai", "noimageai")
_CHUNK = 64 * 1024

#: Leading bytes of the formats fetch decodes (WebP is RIFF....WEBP).
SIGNATURES = {
    b"\xff\xd8\xff": "jpeg",
    b"\x89PNG\r\n\x1a\n": "png",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
}


class DownloadError(RecordError):
    """A URL that did not give image bytes; ``reason`` is a short stable code."""


@dataclasses.dataclass(frozen=True)
class Downloaded:
    data: bytes
    final_url: str
    content_type: str | None
    sniffed_format: str
    redirects: int


#: Images in formats fetch does not decode: named, so the drop says so.
OTHER_IMAGE_SIGNATURES = {
    b"II*\0": "tiff",
    b"MM\0*": "tiff",
    b"BM": "bmp",
    b"\0\0\1\0": "ico",
    b"8BPS": "psd",
}
_ISO_BRANDS = {b"heic": "heic", b"heix": "heic", b"mif1": "heif", b"avif": "avif"}


def sniff_format(head: bytes) -> str | None:
    """The accepted image format the first bytes announce, or None."""
    for signature, name in SIGNATURES.items():
        if head.startswith(signature):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def sniff_other_image(head: bytes) -> str | None:
    """An image format fetch does not accept (TIFF, BMP, HEIC, AVIF …), or None."""
    for signature, name in OTHER_IMAGE_SIGNATURES.items():
        if head.startswith(signature):
            return name
    if head[4:8] == b"ftyp":
        return _ISO_BRANDS.get(head[8:12])
    return None


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str, *, allow_private: bool = False) -> None:
    """Raises DownloadError unless ``url`` is http(s) to a public address."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise DownloadError("unsupported_scheme", f"{parts.scheme or 'no'} scheme in {url!r:.100}")
    host = parts.hostname
    if not host:
        raise DownloadError("bad_url", f"no host in {url!r:.100}")
    if allow_private:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, ValueError) as error:
        raise DownloadError("dns_error", f"{host}: {error}") from None
    for info in infos:
        address = info[4][0]
        if not _is_public(address):
            raise DownloadError(
                "private_address",
                f"{host} resolves to {address}, not a public address "
                "(--allow-private-addresses allows it)",
            )


def opted_out(headers: requests.structures.CaseInsensitiveDict) -> str | None:
    """The X-Robots-Tag directive that opts this image out of AI use, if any."""
    values = headers.get("X-Robots-Tag", "")
    for part in values.replace(";", ",").split(","):
        # Directives may be scoped to a user agent: "otherbot: noai".
        directive = part.rsplit(":", 1)[-1].strip().lower()
        if directive in OPT_OUT_DIRECTIVES:
            return directive
    return None


def download(
    client: PoliteClient,
    url: str,
    *,
    max_bytes: int = MAX_BYTES,
    max_redirects: int = MAX_REDIRECTS,
    allow_private: bool = False,
) -> Downloaded:
    """Downloads ``url``; raises DownloadError with a reason on any failure."""
    seen = [url]
    current = url
    for hop in range(max_redirects + 1):
        check_url(current, allow_private=allow_private)
        try:
            response = client.get(current, stream=True, allow_redirects=False)
        except HttpError as error:
            raise DownloadError(error.reason, error.detail) from None
        with response:
            if response.is_redirect or response.status_code in (301, 302, 303, 307, 308):
                location = response.headers.get("Location")
                if not location:
                    raise DownloadError("bad_redirect", f"{response.status_code} with no Location")
                current = urllib.parse.urljoin(current, location)
                if current in seen:
                    raise DownloadError("redirect_loop", " -> ".join([*seen, current])[:300])
                seen.append(current)
                continue
            return _read_body(response, current, max_bytes, hop)
    raise DownloadError("too_many_redirects", f"over {max_redirects} redirects from {url:.100}")


def _partial_bytes(error: BaseException) -> int:
    """Bytes of the body read before it broke (urllib3's IncompleteRead.partial)."""
    seen: list[BaseException] = [error]
    while seen:
        current = seen.pop()
        partial = getattr(current, "partial", None)
        if isinstance(partial, int):
            return partial
        seen += [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
        if current.__cause__ is not None:
            seen.append(current.__cause__)
    return 0


def _read_body(response: requests.Response, url: str, max_bytes: int, redirects: int) -> Downloaded:
    if response.status_code >= 400:
        raise DownloadError(
            f"http_{response.status_code}", f"{response.status_code} {response.reason}"
        )
    directive = opted_out(response.headers)
    if directive:
        raise DownloadError("opted_out", f"X-Robots-Tag: {response.headers['X-Robots-Tag']}")
    announced = response.headers.get("Content-Length")
    if announced and announced.isdigit() and int(announced) > max_bytes:
        raise DownloadError("too_big", f"Content-Length {int(announced):,} > {max_bytes:,} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_content(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise DownloadError("too_big", f"body over {max_bytes:,} bytes")
            chunks.append(chunk)
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as error:
        if "timed out" in str(error).lower():
            raise DownloadError("timeout", f"after {size:,} bytes: {error}") from None
        got = max(size, _partial_bytes(error))  # urllib3 counts every byte of the body
        of = f" of {int(announced):,}" if announced and announced.isdigit() else ""
        raise DownloadError("truncated", f"{got:,}{of} bytes, then the connection closed") from None
    except requests.exceptions.Timeout as error:
        raise DownloadError("timeout", f"after {size:,} bytes: {error}") from None
    data = b"".join(chunks)
    if announced and announced.isdigit() and len(data) < int(announced):
        raise DownloadError("truncated", f"{len(data):,} of {int(announced):,} bytes")
    if not data:
        raise DownloadError("empty_body", f"{response.status_code} with no body")
    sniffed = sniff_format(data[:16])
    content_type = response.headers.get("Content-Type")
    other = sniff_other_image(data[:16]) if sniffed is None else None
    if other:
        raise DownloadError(
            "unsupported_format", f"{other} image; fetch decodes JPEG, PNG, WebP and GIF"
        )
    if sniffed is None:
        raise DownloadError(
            "not_an_image", f"{images.describe_bytes(data)} (Content-Type: {content_type})"
        )
    return Downloaded(data, url, content_type, sniffed, redirects)
