"""Enrolment quality of the catalogue's singers: GET /singers/{id} and SINGER_EXCLUDE_OUTLIERS.

Blocking catalogue work (run through `Runtime.catalog_call`); the statistic is
`model.enrolment` and its bar the calibration's (`Calibration.enrolment`, per domain).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from catalog import CatalogBackend, Singer, Track
from model.calibration import Calibration, EnrolmentCalibration
from model.domains import DOMAINS
from model.enrolment import SingerReliability, model_without, reliability, singer_tracks

#: Singer models without their outliers kept in memory (least recently used out).
CLEAN_MODELS = 1024
#: Singers read per page when a singer is looked up by id.
SINGERS_PAGE = 500


@dataclass(frozen=True)
class DomainEnrolment:
    """One domain's singer model: its reliability and each track's fit (ids ascending)."""

    domain: str
    tracks: list[Track]
    reliability: SingerReliability
    bar: EnrolmentCalibration | None  # the calibration's (None: uncalibrated, nothing flagged)


def find_singer(catalog: CatalogBackend, singer_id: int) -> Singer | None:
    """The singer with this id, or None (pages through `list_singers`)."""
    offset = 0
    while True:
        total, page = catalog.list_singers(offset, SINGERS_PAGE)
        for singer in page:
            if singer.id == singer_id:
                return singer
        offset += len(page)
        if not page or offset >= total:
            return None


def singer_enrolment(
    catalog: CatalogBackend, singer: Singer, cal: Calibration | None, segment_s: float
) -> list[DomainEnrolment]:
    """The reliability of each of the singer's models (domains with tracks)."""
    out = []
    for domain in DOMAINS:
        ids, vectors, n_segments = singer_tracks(catalog, singer.name, domain)
        if not ids:
            continue
        bar = cal.enrolment.get(domain) if cal is not None else None
        out.append(
            DomainEnrolment(
                domain,
                [catalog.get_track(i) for i in ids],
                reliability(
                    vectors,
                    n_segments,
                    segment_s,
                    bar.outlier_below if bar is not None else None,
                    bar.statistic if bar is not None else "relative_fit",
                ),
                bar,
            )
        )
    return out


class _CleanModels:
    """Singer models without outlier tracks, keyed by the catalogue's model of the singer
    (any change to the singer's tracks changes it, so an entry is never stale)."""

    def __init__(self, capacity: int = CLEAN_MODELS):
        self.capacity = capacity
        self._lock = threading.Lock()
        self._models: OrderedDict[tuple, tuple[np.ndarray, int]] = OrderedDict()

    def get(
        self, catalog: CatalogBackend, singer: Singer, domain: str, bar: EnrolmentCalibration
    ) -> tuple[np.ndarray, int]:
        model = catalog.singer_vector(singer.id, domain)
        if model is None:
            raise ValueError(f"singer {singer.name!r} has no {domain} tracks")
        digest = hashlib.sha1(np.ascontiguousarray(model, np.float32).tobytes()).hexdigest()
        key = (singer.id, domain, digest, bar)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        ids, vectors, n_segments = singer_tracks(catalog, singer.name, domain)
        fit = reliability(vectors, n_segments, 1.0, bar.outlier_below, bar.statistic)
        clean = model_without(vectors, fit.outliers)
        found = (clean, int((~fit.outliers).sum())) if clean is not None else (model, len(ids))
        with self._lock:
            self._models[key] = found
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
        return found


_CLEAN = _CleanModels()


def clean_model(
    catalog: CatalogBackend, singer: Singer, domain: str, bar: EnrolmentCalibration
) -> tuple[np.ndarray, int]:
    """(The singer's model in `domain` without the tracks that `bar` flags, float32 (dim,)
    unit; the number of tracks it averages). Cached."""
    return _CLEAN.get(catalog, singer, domain, bar)
