"""The API docs work without a network: /docs and /redoc load their scripts, styles and icon
from the service (fastapi-offline), and Swagger UI's OAuth2 redirect page is served."""

from __future__ import annotations

import re

ASSETS = "/static-offline-docs/"
TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def _references(html: str) -> set[str]:
    return set(re.findall(r"""(?:src|href)=["']([^"']+)""", html))


def test_docs_pages_load_every_asset_from_the_service(client):
    names = set()
    for page in ("/docs", "/redoc"):
        refs = _references(client.get(page).text)
        assert refs and all(r.startswith(ASSETS) for r in refs), refs  # no CDN
        names |= {r.removeprefix(ASSETS) for r in refs}
    assert {"swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"} <= names
    for name in sorted(names):
        r = client.get(f"/static-offline-docs/{name}")
        assert r.status_code == 200, name
        suffix = name[name.rindex(".") :]
        assert r.headers["content-type"].startswith(TYPES[suffix]), (name, r.headers)
        assert len(r.content) > 1000, name
    assert client.get("/static-offline-docs/nothing.js").status_code == 404


def test_swagger_oauth2_redirect_page(client):
    r = client.get("/docs/oauth2-redirect")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "oauth2" in r.text
    # the docs page sends Swagger UI's OAuth2 flow there
    assert "/docs/oauth2-redirect" in client.get("/docs").text
