"""The web page and its static files (service/routers/pages.py), and the API's own docs."""

from __future__ import annotations


def test_the_page_and_its_files(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<html" in r.text.lower()
    assert client.get("/static/app.js").status_code == 200
    # the page takes any query (links with tracking parameters); the API's routes do not
    assert client.get("/?utm_source=x").status_code == 200


def test_the_docs_and_the_schema(client):
    assert client.get("/docs").status_code == 200
    assert client.get("/redoc").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths) == {
        "/identify",
        "/search",
        "/singers",
        "/singers/{singer_id}",
        "/tracks",
        "/tracks/{track_id}",
        "/tracks/{track_id}/audio",
        "/healthz",
        "/readyz",
        "/metrics",
    }


def test_an_unknown_path_is_a_404(client):
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
