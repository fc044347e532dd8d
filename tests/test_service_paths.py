"""No server path in any answer by default (issue 39, finding 4): `GET /tracks/{id}`,
`GET /tracks` and every `/search` hit returned the absolute path of the indexed file.

A catalogue is built with the indexer from a folder (so tracks record their files' paths),
then every route of a real uvicorn is requested, and no answer may contain a path of the
server: the music folder, the catalogue, the checkpoint, the temporary directory, the
checkout. With SINGER_EXPOSE_PATHS=true the full path comes back.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

from tests.support import REPO
from tests.support.live import API_KEY, LiveServer, make_clip, singer_name, upload

pytestmark = pytest.mark.e2e

KEY = {"X-API-Key": API_KEY}
# An absolute path to a file of the kinds the service touches, anywhere in a text.
ABSOLUTE_FILE = re.compile(
    r"(?<![\w.:/])/(?:[\w.@+-]+/)+[\w.@+-]+\.(?:wav|flac|mp3|m4a|ogg|pt|db|sqlite|json|npy|faiss)"
)
# Non-API routes (not in the schema) requested too: the page, the docs, the schema.
PAGES = ["/", "/docs", "/redoc", "/openapi.json"]


@pytest.fixture
def indexed(tmp_path_factory, random_checkpoint) -> tuple[Path, Path]:
    """A <singer>/<file> folder indexed into a fresh catalogue: (music folder, catalogue);
    one per test (the walk deletes a track and files an upload)."""
    from catalog import Catalog
    from indexer.run import index_source
    from model.embedding import Embedder

    music = tmp_path_factory.mktemp("music") / "library"
    for voice in (0, 1):
        folder = music / singer_name(voice)
        folder.mkdir(parents=True)
        make_clip(folder, voice, "mixed", voice)
    index = tmp_path_factory.mktemp("svc") / "index"
    embedder = Embedder.from_checkpoint(random_checkpoint, "cpu")
    with Catalog.open(index, dim=embedder.embed_dim) as catalog:
        report = index_source(catalog, embedder, music, domain="mixed")
        catalog.add_roots([str(music)])  # as `python -m indexer` records the folder it indexed
    assert report.n_added == 2
    return music, index


def serve(indexed, checkpoint, **settings) -> LiveServer:
    from service.settings import Settings

    _, index = indexed
    return LiveServer(
        Settings(index_dir=index, checkpoint=checkpoint, device="cpu", api_key=API_KEY, **settings)
    )


def server_paths(indexed, checkpoint) -> list[str]:
    music, index = indexed
    return [
        str(music),
        str(index),
        str(checkpoint),
        str(Path(checkpoint).parent),
        tempfile.gettempdir() + "/",
        str(REPO),
        str(Path.home()) + "/",
    ]


def fill(path: str, ids: dict[str, int]) -> str:
    """`path` with its `{name}` parameters replaced by the ids given (each must be)."""
    names = re.findall(r"\{(\w+)\}", path)
    assert set(names) <= ids.keys(), f"no id for {path}: add one to the walk"
    for name in names:
        path = path.replace(f"{{{name}}}", str(ids[name]))
    return path


def walk(client, schema: dict, ids: dict[str, int], clip: Path) -> dict[tuple[str, str], str]:
    """Request every operation of the schema once with valid input (DELETE last, of an
    indexed track) and every page: the text of each answer, by (method, path)."""
    operations = [(m.upper(), p) for p, ops in schema["paths"].items() for m in ops]
    operations.sort(key=lambda op: op[0] == "DELETE")
    texts = {}
    for method, path in operations:
        url = fill(path, ids)
        if method == "POST":
            form = {"singer": "uploader", "domain": "mono"} if path == "/tracks" else {}
            r = upload(client, url, clip, headers=KEY, **form)
        else:
            r = client.request(method, url, headers=KEY)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text[:300]}"
        audio = r.headers.get("content-type", "").startswith("audio/")
        texts[(method, path)] = "" if audio else r.text
    for page in PAGES:
        r = client.get(page)
        assert r.status_code == 200, page
        texts[("GET", page)] = r.text
    return texts


def test_no_route_answers_with_a_server_path(indexed, random_checkpoint, tmp_path):
    clip = make_clip(tmp_path, 2, "mono", 5).path
    with serve(indexed, random_checkpoint) as server, server.client() as client:
        schema = client.get("/openapi.json").json()
        tracks = client.get("/tracks").json()["tracks"]
        assert len(tracks) == 2
        # Relative to the indexed folder (the catalogue records it), never absolute.
        shown = {"singer-0/singer-0-mixed-0.wav", "singer-1/singer-1-mixed-1.wav"}
        assert {t["path"] for t in tracks} == shown
        hits = upload(client, "/search", clip, target="mixed").json()["tracks"]
        assert {h["path"] for h in hits} == {t["path"] for t in tracks}
        ids = {"track_id": tracks[0]["id"], "singer_id": tracks[0]["singer_id"]}
        texts = walk(client, schema, ids, clip)
    assert len(texts) == sum(len(ops) for ops in schema["paths"].values()) + len(PAGES)
    forbidden = server_paths(indexed, random_checkpoint)
    for (method, path), text in texts.items():
        leaked = [p for p in forbidden if p in text] + ABSOLUTE_FILE.findall(text)
        assert not leaked, f"{method} {path} shows {leaked}: {text[:300]}"


def test_expose_paths_shows_the_full_path(indexed, random_checkpoint, tmp_path):
    music, _ = indexed
    with (
        serve(indexed, random_checkpoint, expose_paths=True) as server,
        server.client() as client,
    ):
        tracks = client.get("/tracks").json()["tracks"]
        clip = make_clip(tmp_path, 1, "mono", 6).path
        hits = upload(client, "/search", clip, target="mixed").json()["tracks"]
    expected = {str(music / singer_name(v) / f"{singer_name(v)}-mixed-{v}.wav") for v in (0, 1)}
    assert {t["path"] for t in tracks} == expected
    assert {h["path"] for h in hits} == expected
