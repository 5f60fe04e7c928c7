"""Download the http(s) images of a request for Gemini (I/O).

Gemini takes images inline only, so the gateway fetches what a client gave
by URL. Because the gateway then fetches URLs chosen by its clients, it
refuses hosts that resolve to private, loopback or link-local addresses
(unless told otherwise, as tests are) and checks every redirect hop again.
Every failure is the client's: 400 naming the content part.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import mimetypes
import socket

import aiohttp
from yarl import URL

from llm_gateway.errors import InvalidRequest
from llm_gateway.wire.gemini.to_wire import InlineImage

MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class _Refused(Exception):
    """Why one image could not be used; becomes InvalidRequest."""


async def _check_host(url: URL) -> None:
    if url.scheme not in ("http", "https") or not url.host:
        raise _Refused("is not an http(s) URL")
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(url.host, url.port, type=socket.SOCK_STREAM)
    except OSError:
        raise _Refused("names a host that does not resolve") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not address.is_global:
            raise _Refused("names a host with a private address")


def _mime_type(resp: aiohttp.ClientResponse, url: URL) -> str:
    mime = resp.content_type.lower()
    if not mime.startswith("image/"):
        mime = (mimetypes.guess_type(url.path)[0] or "").lower()
    if not mime.startswith("image/"):
        raise _Refused("is not an image")
    return mime


async def _fetch(
    session: aiohttp.ClientSession, url: URL, timeout: aiohttp.ClientTimeout, allow_private: bool
) -> InlineImage:
    for _ in range(MAX_REDIRECTS + 1):
        if not allow_private:
            await _check_host(url)
        elif url.scheme not in ("http", "https"):
            raise _Refused("is not an http(s) URL")
        async with session.get(url, allow_redirects=False, timeout=timeout) as resp:
            if resp.status in _REDIRECTS and "location" in resp.headers:
                url = url.join(URL(resp.headers["location"]))
                continue
            if resp.status != 200:
                raise _Refused(f"answered with status {resp.status}")
            if (resp.content_length or 0) > MAX_IMAGE_BYTES:
                raise _Refused(f"is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB")
            mime = _mime_type(resp, url)
            data = bytearray()
            async for chunk in resp.content.iter_chunked(65536):
                data += chunk
                if len(data) > MAX_IMAGE_BYTES:
                    raise _Refused(f"is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB")
            return InlineImage(mime, base64.b64encode(bytes(data)).decode())
    raise _Refused("redirects too many times")


async def _one(
    session: aiohttp.ClientSession, param: str, url: str, timeout: aiohttp.ClientTimeout, allow_private: bool
) -> InlineImage:
    try:
        return await _fetch(session, URL(url), timeout, allow_private)
    except _Refused as exc:
        reason = str(exc)
    except (TimeoutError, aiohttp.ClientError, ValueError):
        reason = "could not be downloaded"
    raise InvalidRequest(f"The image URL at {param} {reason}.", param=param, code="invalid_image_url")


async def fetch_images(
    session: aiohttp.ClientSession,
    wanted: list[tuple[str, str]],
    *,
    timeout: aiohttp.ClientTimeout,
    allow_private: bool = False,
) -> dict[str, InlineImage]:
    """Download ``(param, url)`` images concurrently; the result is keyed by URL."""
    urls: dict[str, str] = {}
    for param, url in wanted:
        urls.setdefault(url, param)
    results = await asyncio.gather(
        *(_one(session, param, url, timeout, allow_private) for url, param in urls.items()),
        return_exceptions=True,
    )
    images: dict[str, InlineImage] = {}
    for url, result in zip(urls, results, strict=True):
        if isinstance(result, BaseException):
            raise result
        images[url] = result
    return images
