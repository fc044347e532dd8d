"""The catalogue in Qdrant: shared by any number of stateless service replicas and indexers.

Three collections per catalogue name C (`catalog.open_catalog` parses the URL):

    C_tracks    one point per track: id = track id, vector (dim,) L2-normalised, payload =
                every `Track` field + `version` (a fresh token per write of the point)
    C_singers   one point per (singer, domain) model: id = uuid5(singer id, domain), vector
                = L2-normalised mean of that singer's track vectors there, payload = singer_id,
                name, domain, n_tracks, fingerprint (of the tracks it was computed from)
    C_meta      one point: dim, uuid, schema version (the catalogue's identity); the
                indexed roots, one point each
    C_live      the live generation (catalog/qdrant_generations.py: after a migration the
                collections of generation G are C__G_tracks, C__G_singers, C__G_meta)

Scores are inner products (Distance.DOT) of L2-normalised vectors, i.e. cosine similarity,
exactly as the FAISS backend answers. Qdrant holds all state, so a process keeps nothing
between calls and sees every other process's writes at its next call.

Ids. Track ids must fit JavaScript numbers (< 2**53) and grow with time (keyset
pagination by id lists tracks in insertion order): milliseconds since 2024 in the high bits,
12 random bits below, strictly increasing within a process. Singer ids are a hash of the
name, so every writer agrees on them without a counter.

Concurrent writers. Qdrant has no multi-point transactions. What this backend guarantees:
- a point write is atomic; a batch is validated (duplicates, fields) before anything is
  written, but a process killed mid-batch can leave part of it (re-running the indexer
  skips what landed, as with SQLite);
- singer models converge: after every write, each touched (singer, domain) model is
  recomputed from the singer's stored track vectors, written, and then the track set is
  read again; if its fingerprint (ids and versions) changed meanwhile, the model is
  recomputed. The last model write is thus always checked against a read made after every
  track write that preceded it, so when writers stop, each model equals the mean of the
  stored vectors (optimistic versioning, no lock);
- duplicate detection is check-then-write: two writers adding the same content at the same
  instant can both succeed (two tracks); the service's per-content lock prevents it within
  one replica, and `indexer remove` cleans up.

Costs. Searches, `find_track`, `list_tracks` and counts use Qdrant's payload indexes;
`stats` (duration sum, singer count) and, in local mode, `checkpoint_ids` scan the payloads
of every point: fine for `indexer stats`, but mind it when /metrics is scraped often on a
catalogue of millions (the service reads checkpoint ids through a facet on a server).

The class is assembled from one module per job: `catalog.qdrant_points` (ids, payloads,
filters), `catalog.qdrant_core` (client, collections, singer models), `catalog.qdrant_reads`,
`catalog.qdrant_writes`, `catalog.qdrant_generations`.

Local mode (`qdrant+local://`, `qdrant+memory://`) runs Qdrant in this process: one process
per folder (it locks it), exact search; for tests and small setups. Its client is not
thread-safe, so calls are serialised with a lock there.
"""

from __future__ import annotations

from qdrant_client import QdrantClient

from catalog.base import check_generation_name
from catalog.errors import CatalogError
from catalog.qdrant_core import SCHEMA_VERSION
from catalog.qdrant_generations import QdrantGenerations, read_live, write_live
from catalog.qdrant_points import singer_id_of
from catalog.qdrant_reads import QdrantReads
from catalog.qdrant_writes import QdrantWrites

__all__ = ["SCHEMA_VERSION", "QdrantCatalog", "singer_id_of"]


class QdrantCatalog(QdrantGenerations, QdrantWrites, QdrantReads):
    """Catalogue in three Qdrant collections; see the module docstring."""

    @classmethod
    def open(
        cls,
        client: QdrantClient,
        collection: str,
        *,
        location: str,
        dim: int | None = 256,
        generation: str | None = None,
    ) -> QdrantCatalog:
        """Open (creating if absent) catalogue `collection` on `client`.

        `dim` None: whatever the catalogue holds. `generation`: which one; None: the live
        one. Raises CatalogError for a catalogue of another dimension holding vectors, a newer
        schema, or an unreachable server.
        """
        try:
            if generation is None:
                probe = cls(client, collection, location, dim or 256, "")
                name = read_live(probe)
                probe._detach()
            else:
                name = check_generation_name(generation)
            catalog = cls._open_generation(client, collection, location, dim, name)
            successor = catalog.generation_successor()
            if generation is None and successor is not None:
                # A switch that stopped between retiring and the pointer write: finish it.
                write_live(catalog, successor)
                retired = catalog
                catalog = cls._open_generation(client, collection, location, dim, successor)
                retired.close()  # after: the last handle's close closes the client
        except CatalogError:
            raise
        except Exception as err:  # connection refused, timeouts, HTTP errors
            raise CatalogError(f"{location}: Qdrant is not usable: {err}") from err
        return catalog

    @classmethod
    def _open_generation(
        cls, client: QdrantClient, collection: str, location: str, dim: int | None, name: str
    ) -> QdrantCatalog:
        catalog = cls(client, collection, location, dim or 256, name)
        try:
            catalog._prepare(dim)
        except BaseException:
            catalog.close()
            raise
        return catalog

    def generation_successor(self) -> str | None:
        """The generation that retired this one, when its collections exist."""
        successor = (self._meta_payload() or {}).get("retired_by")
        if successor is None:
            return None
        probe = QdrantCatalog(self._client, self.collection, self.location, self.dim, successor)
        try:
            exists = probe._call(self._client.collection_exists, probe._meta)
        finally:
            probe._detach()
        return str(successor) if exists else None
