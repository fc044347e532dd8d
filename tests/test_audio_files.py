"""Which file a track plays (service/audio_files.py): real folders, symlinks and catalogues."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from catalog import Catalog, Track
from service.audio_files import GONE, NOT_STORED, OUTSIDE_ROOTS, AudioFiles
from service.settings import Settings


def track(path: str | None, digest: str = "0" * 64, track_id: int = 1) -> Track:
    return Track(track_id, "s", 1, "mono", path, None, None, 5.0, 1, digest, "c", "then")


@pytest.fixture
def library(tmp_path) -> dict[str, Path]:
    """A library of symlinks: files and a whole singer folder live elsewhere on the disk."""
    storage, lib = tmp_path / "storage", tmp_path / "library"
    (storage / "bob").mkdir(parents=True)
    (lib / "alice").mkdir(parents=True)
    (storage / "a.wav").write_bytes(b"RIFF alice")
    (storage / "bob" / "b.wav").write_bytes(b"RIFF bob")
    (lib / "alice" / "a.wav").symlink_to(storage / "a.wav")
    (lib / "bob").symlink_to(storage / "bob", target_is_directory=True)
    (lib / "carol").mkdir()
    (lib / "carol" / "c.wav").write_bytes(b"RIFF carol")
    (tmp_path / "secret.wav").write_bytes(b"not for you")
    return {"storage": storage, "lib": lib, "tmp": tmp_path}


def files(tmp_path, catalog_roots=(), audio_roots=(), store_uploads=True) -> AudioFiles:
    settings = Settings(
        index_dir=tmp_path / "index", audio_roots=list(audio_roots), store_uploads=store_uploads
    )
    return AudioFiles(settings, roots=lambda: [str(r) for r in catalog_roots])


def test_a_symlinked_library_plays_from_its_indexed_folder(library):
    lib, storage = library["lib"], library["storage"]
    audio = files(library["tmp"], catalog_roots=[lib])
    assert audio.locate(track(str(lib / "alice" / "a.wav"))) == (storage / "a.wav").resolve()
    assert audio.locate(track(str(lib / "bob" / "b.wav"))) == (storage / "bob" / "b.wav").resolve()
    assert audio.locate(track(str(lib / "carol" / "c.wav"))).read_bytes() == b"RIFF carol"
    # SINGER_AUDIO_ROOTS is a root too, by the same rule (it used to refuse the links).
    configured = files(library["tmp"], audio_roots=[lib])
    assert configured.playable(track(str(lib / "alice" / "a.wav")))


def test_files_outside_every_root_or_climbing_out_are_refused(library):
    lib, tmp = library["lib"], library["tmp"]
    audio = files(tmp, catalog_roots=[lib])
    assert audio.unavailable(track(str(tmp / "secret.wav"))) == OUTSIDE_ROOTS
    assert audio.unavailable(track(f"{lib}/carol/../../secret.wav")) == OUTSIDE_ROOTS
    # '..' is judged by where it really leads: inside a root it plays.
    assert audio.playable(track(f"{lib}/carol/../carol/c.wav"))
    assert files(tmp).unavailable(track(str(lib / "carol" / "c.wav"))) == OUTSIDE_ROOTS


def test_gone_and_not_stored_are_told_apart(library):
    lib, tmp = library["lib"], library["tmp"]
    audio = files(tmp, catalog_roots=[lib])
    (library["storage"] / "a.wav").unlink()  # the link now dangles
    assert audio.unavailable(track(str(lib / "alice" / "a.wav"))) == GONE
    assert audio.unavailable(track(str(lib / "dave" / "d.wav"))) == GONE
    digest = "ab" * 32
    assert audio.unavailable(track(None, digest)) == NOT_STORED
    audio.keep_upload(b"RIFF upload", digest, "take.wav")
    assert audio.locate(track(None, digest)).read_bytes() == b"RIFF upload"
    # A gone file whose content was also uploaded plays the kept copy.
    assert audio.playable(track(str(lib / "alice" / "a.wav"), digest))


def test_roots_come_from_the_catalogue_and_follow_it(library, tmp_path):
    lib = library["lib"]
    with Catalog.open(tmp_path / "index", dim=8) as catalog:
        audio = files(tmp_path)
        audio.follow(catalog.roots)
        carol = track(str(lib / "carol" / "c.wav"))
        assert audio.unavailable(carol) == OUTSIDE_ROOTS
        catalog.add_roots([str(lib)])
        audio.follow(catalog.roots)  # a new source re-reads at once; else within 5 s
        assert audio.playable(carol)
        assert audio.display_path(str(lib / "bob" / "b.wav")) == "bob/b.wav"
        assert audio.display_path(str(library["tmp"] / "secret.wav")) == "secret.wav"


def test_the_upload_store_never_serves_outside_itself(tmp_path):
    audio = files(tmp_path)
    digest = "cd" * 32
    store = tmp_path / "index" / "audio"
    store.mkdir(parents=True)
    (tmp_path / "elsewhere.wav").write_bytes(b"x")
    os.symlink(tmp_path / "elsewhere.wav", store / f"{digest}.wav")
    assert audio.unavailable(track(None, digest)) == NOT_STORED
