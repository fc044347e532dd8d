"""service/catalog_swap.py: requests stay on the model and catalogue they started with, an old
pair closes once its last request ends, and a write refused by a retired generation is made
again on the new one. Real catalogues; the service-level test is tests/test_migration_live.py."""

from __future__ import annotations

import asyncio
import contextvars
import time
from types import SimpleNamespace

import numpy as np
import pytest

from catalog import Catalog
from catalog.errors import CatalogError, CatalogRetiredError
from service.catalog_swap import GenerationFollower, Serving, ServingSlot, retry_after_swap
from tests.test_catalog import DIM, item


def serving(catalog: Catalog, name: str) -> Serving:
    # Only the catalogue side is exercised here: the model is shared (owns_model=False),
    # never closed, and only its checkpoint id is read (for the log).
    model = SimpleNamespace(checkpoint_id=f"ckpt-{name}")
    return Serving(model, catalog, None, None, None, "", name, owns_model=False)  # type: ignore[arg-type]


def closed(catalog: Catalog) -> bool:
    try:
        len(catalog)
    except CatalogError:
        return True
    return False


def wait_closed(catalog: Catalog) -> bool:
    deadline = time.monotonic() + 5
    while not closed(catalog) and time.monotonic() < deadline:
        time.sleep(0.01)
    return closed(catalog)


def test_a_request_keeps_its_pair_and_the_old_one_closes_after_it(tmp_path):
    slot = ServingSlot()
    a = serving(Catalog.open(tmp_path / "a", dim=DIM), "")
    b = serving(Catalog.open(tmp_path / "b", dim=DIM), "b")
    slot.install(a)
    with slot.pinned() as pinned:
        assert pinned is a and slot.current is a
        slot.install(b)
        assert slot.current is a and slot.now is b  # this request still sees A
        # Another request, started now, gets B.
        assert contextvars.Context().run(lambda: slot.current) is b
        assert not closed(a.catalog)  # in use
        slot.repin()
        assert slot.current is b
    assert wait_closed(a.catalog) and not closed(b.catalog)
    with slot.pinned():
        assert slot.current is b
    slot.close()
    assert closed(b.catalog)


def test_a_write_on_a_retired_generation_is_made_again_after_the_swap(tmp_path):
    rng = np.random.default_rng(0)

    async def scenario() -> None:
        old = Catalog.open(tmp_path, dim=DIM)
        old.add_track(**item(rng, 1, "before"))
        shadow = old.open_generation("next", dim=DIM)
        shadow.restore_tracks(old.iter_stored())
        assert old.switch_to(shadow, lambda: True)
        shadow.close()
        slot = ServingSlot()
        slot.install(serving(old, ""))

        def build(name: str, current: Serving) -> Serving:
            return serving(current.catalog.open_generation(name, dim=DIM), name)

        follower = GenerationFollower(slot, build, poll_s=30.0)  # only woken by the write
        running = asyncio.create_task(follower.run())
        tried: list[str] = []

        async def attempt():
            current = slot.current
            tried.append(current.generation)
            return await asyncio.to_thread(current.catalog.add_track, **item(rng, 2, "during"))

        try:
            with slot.pinned():
                track = await retry_after_swap(slot, follower, attempt)
        finally:
            running.cancel()
        assert tried == ["", "next"]
        assert slot.now.generation == "next" and slot.now.catalog.get_track(track.id)
        assert wait_closed(old)
        with pytest.raises(CatalogRetiredError):
            Catalog.open(tmp_path, generation="", dim=DIM).add_track(**item(rng, 3, "x"))
        slot.close()

    asyncio.run(scenario())


def test_a_write_the_service_cannot_move_in_time_is_503_catalog_switching(
    tmp_path_factory, random_checkpoint, monkeypatch
):
    """The generation a migration made live cannot be opened here (damaged): reads go on
    from the retired one, a write waits for a swap that does not come, then 503."""
    import service.catalog_swap as swap
    from tests.service.conftest import KEY, app_settings, runtime_of, serving
    from tests.support.live import make_clip

    monkeypatch.setattr(swap, "SWAP_WAIT_S", 1.0)
    settings = app_settings(tmp_path_factory, random_checkpoint, catalog_poll_s=0.2)
    clip = make_clip(tmp_path_factory.mktemp("clip"), 0, "mono", 0)
    with serving(settings) as client:
        live = runtime_of(client).catalog
        shadow = live.open_generation("damaged", dim=live.dim)
        assert live.switch_to(shadow, lambda: True)
        shadow.close()
        (settings.index_dir / "generations" / "damaged" / "catalog.sqlite").write_bytes(
            b"not a database" * 100
        )
        with open(clip.path, "rb") as fh:
            files = {"file": (clip.path.name, fh, "audio/wav")}
            r = client.post(
                "/tracks", files=files, data={"singer": "s", "domain": "mono"}, headers=KEY
            )
        assert r.status_code == 503 and r.json()["code"] == "catalog_switching", r.text
        assert r.headers["Retry-After"]
        assert client.get("/singers").status_code == 200  # reads go on
