"""The `quality` object of /identify, /search and POST /tracks, and the refusal of uploads
without singing, over real HTTP with real MIR-1K material (held out of the detector)."""

import numpy as np
import pytest

from model.audio import load_audio
from model.mixing import nominal_mix
from tests.support.live import API_KEY, LiveServer, live_settings, upload
from tests.support.synth import write

SR = 22050
KEY = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def client(tmp_path_factory, random_checkpoint):
    with LiveServer(live_settings(tmp_path_factory, random_checkpoint)) as srv, srv.client() as c:
        yield c


@pytest.fixture(scope="module")
def files(shared_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("voice-uploads")
    mir = shared_dir / "data" / "mir1k"
    vocals = load_audio(mir / "vocals" / "khair_2_03.opus")
    accompaniment = load_audio(mir / "accompaniment" / "khair_2_03.opus")
    return {
        "vocals": write(d / "vocals.wav", vocals),
        "mix": write(d / "mix.wav", nominal_mix(vocals, accompaniment)),
        "dc": write(d / "dc.wav", np.full(10 * SR, 0.5, np.float32)),
        "square": write(
            d / "square.wav",
            0.99 * np.sign(np.sin(2 * np.pi * 220 * np.arange(10 * SR) / SR)).astype(np.float32),
        ),
    }


def test_adding_and_querying_report_quality(client, files):
    r = upload(client, "/tracks", files["vocals"], headers=KEY, singer="khair", domain="mono")
    assert r.status_code == 201, r.text
    q = r.json()["quality"]
    assert set(q) == {"voiced_fraction", "n_segments", "flags", "domain_score"}
    assert q["n_segments"] == r.json()["n_segments"] >= 1
    assert 0.3 < q["voiced_fraction"] <= 1.0 and q["domain_score"] < 0.5
    assert "domain_mismatch" not in q["flags"]
    again = upload(client, "/tracks", files["vocals"], headers=KEY, singer="khair", domain="mono")
    assert again.status_code == 200 and again.json()["quality"] is None

    # The song declared as a vocal take: answered, and the answer says what is wrong.
    for endpoint in ("/identify", "/search"):
        r = upload(client, endpoint, files["mix"], domain="mono")
        assert r.status_code == 200, r.text
        q = r.json()["quality"]
        assert q["domain_score"] > 0.5
        assert {"mostly_accompaniment", "domain_mismatch"} <= set(q["flags"])
        assert q["n_segments"] == r.json()["n_segments"]
    ok = upload(client, "/identify", files["mix"], domain="mixed").json()["quality"]
    assert "domain_mismatch" not in ok["flags"]


def test_auto_answers_as_the_domain_it_hears(client, files):
    """domain=auto over HTTP: the same answer as asking for the branch the detector chose,
    and the response says both what was asked and how it was embedded."""
    r = upload(client, "/tracks", files["vocals"], headers=KEY, singer="khair", domain="mono")
    assert r.status_code in (200, 201), r.text
    for name, branch in (("vocals", "mono"), ("mix", "mixed")):
        for endpoint in ("/identify", "/search"):
            auto = upload(client, endpoint, files[name], domain="auto")
            asked = upload(client, endpoint, files[name], domain=branch)
            assert auto.status_code == asked.status_code == 200, auto.text
            a, b = auto.json(), asked.json()
            assert (a["domain"], a["requested_domain"]) == (branch, "auto")
            assert (b["domain"], b["requested_domain"]) == (branch, branch)
            assert "domain_mismatch" not in a["quality"]["flags"]
            assert ("mostly_accompaniment" in a["quality"]["flags"]) == (branch == "mixed")
            hits = "singers" if endpoint == "/identify" else "tracks"
            assert a[hits] and [h["score"] for h in a[hits]] == pytest.approx(
                [h["score"] for h in b[hits]], abs=1e-5
            )
    bad = upload(client, "/identify", files["vocals"], domain="stereo")
    assert bad.status_code == 422 and "auto" in bad.text


@pytest.mark.parametrize("name", ["dc", "square"])
def test_no_singing_is_refused_everywhere(client, files, name):
    for endpoint, form, headers in (
        ("/identify", {}, None),
        ("/search", {}, None),
        ("/tracks", {"singer": "nobody", "domain": "mono"}, KEY),
    ):
        r = upload(client, endpoint, files[name], headers=headers, **form)
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "no_voiced_segment"
        assert "no singing voice" in r.json()["detail"]


def test_openapi_documents_quality(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    quality = schemas["Quality"]
    assert set(quality["properties"]) == {"voiced_fraction", "n_segments", "flags", "domain_score"}
    assert quality["examples"][0]["flags"]
    for name in ("IdentifyResponse", "SearchResponse", "TrackAdded"):
        assert "quality" in schemas[name]["properties"]
