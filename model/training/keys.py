"""Musical key finding: the Krumhansl-Schmuckler algorithm on chroma.

The key of a stretch of audio is the one of the 24 major/minor keys whose Krumhansl-Kessler
tonal-hierarchy profile, rotated to that tonic, has the highest Pearson correlation with the
stretch's summed chroma vector (Krumhansl, "Cognitive Foundations of Musical Pitch", 1990).
The mashup generator uses it on every 3-second segment of vocals and backgrounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_FLATS = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}

# Krumhansl-Kessler probe-tone ratings, index 0 = tonic.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@dataclass(frozen=True, order=True)
class Key:
    """A major or minor key. `tonic` is a pitch class 0..11 (0 = C)."""

    tonic: int
    minor: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.tonic < 12:
            raise ValueError(f"tonic must be a pitch class 0..11, got {self.tonic}")

    @property
    def index(self) -> int:
        """0..23: majors C..B, then minors C..B (the row of `key_scores`)."""
        return self.tonic + 12 * int(self.minor)

    @classmethod
    def from_index(cls, index: int) -> Key:
        return cls(int(index) % 12, bool(int(index) // 12))

    @classmethod
    def parse(cls, name: str) -> Key:
        """`"F# major"`, `"a minor"`, `"Bb"` (major when the mode is left out)."""
        parts = name.strip().split()
        note = parts[0][0].upper() + parts[0][1:]
        note = _FLATS.get(note, note)
        if note not in PITCH_CLASSES or len(parts) > 2:
            raise ValueError(f"not a key name: {name!r}")
        mode = parts[1].lower() if len(parts) == 2 else "major"
        if mode not in ("major", "minor"):
            raise ValueError(f"mode must be major or minor: {name!r}")
        return cls(PITCH_CLASSES.index(note), mode == "minor")

    @property
    def name(self) -> str:
        return f"{PITCH_CLASSES[self.tonic]} {'minor' if self.minor else 'major'}"

    def __str__(self) -> str:
        return self.name

    def transpose(self, semitones: int) -> Key:
        """The key `semitones` higher (negative: lower), same mode."""
        return Key((self.tonic + semitones) % 12, self.minor)

    def relative(self) -> Key:
        """The relative major/minor: C major <-> A minor (same notes, other tonic)."""
        return Key((self.tonic + 3) % 12, False) if self.minor else Key((self.tonic - 3) % 12, True)


def _profiles() -> np.ndarray:
    """(24, 12) z-scored profiles rotated to every tonic, rows ordered as `Key.index`."""
    rows = [np.roll(p, t) for p in (MAJOR_PROFILE, MINOR_PROFILE) for t in range(12)]
    m = np.asarray(rows, dtype=np.float64)
    m -= m.mean(axis=1, keepdims=True)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


_PROFILES = _profiles()


def key_scores(chroma: np.ndarray) -> np.ndarray:
    """Pearson correlation of a chroma profile with each of the 24 keys.

    chroma: (12,) or (12, frames) (frames are summed). Returns (24,) in `Key.index` order;
    all zeros when the chroma is flat (silence: no key is more likely than another).
    """
    c = np.asarray(chroma, dtype=np.float64)
    if c.ndim == 2:
        c = c.sum(axis=1)
    if c.shape != (12,):
        raise ValueError(f"chroma must have 12 pitch classes, got shape {np.shape(chroma)}")
    c = c - c.mean()
    norm = np.linalg.norm(c)
    if norm < 1e-12:
        return np.zeros(24)
    return _PROFILES @ (c / norm)


def find_key(chroma: np.ndarray) -> Key | None:
    """The best-correlated key of a chroma profile ((12,) or (12, frames)); None if flat."""
    scores = key_scores(chroma)
    if not scores.any():
        return None
    return Key.from_index(int(np.argmax(scores)))


def chromagram(y: np.ndarray, sr: int, hop_length: int = 512, method: str = "cqt") -> np.ndarray:
    """Chroma (12, frames) of mono audio `y` (samples,); frame t is centred on t * hop_length.

    `cqt` (the default) resolves low notes well; `stft` is cheaper and cruder.
    """
    import librosa  # heavy import, only where chroma is computed

    y = np.asarray(y, dtype=np.float32)
    if method == "cqt":
        return librosa.feature.chroma_cqt(y=y, sr=sr, hop_length=hop_length)
    if method == "stft":
        return librosa.feature.chroma_stft(y=y, sr=sr, hop_length=hop_length, n_fft=4096)
    raise ValueError(f"chroma method must be 'cqt' or 'stft', got {method!r}")


def segment_keys(chroma: np.ndarray, start_frames: np.ndarray, n_frames: int) -> list[Key | None]:
    """Key of each window `chroma[:, s : s + n_frames]` for s in `start_frames`."""
    # Cumulative sums make every window O(1), whatever the number of overlapping windows.
    cum = np.concatenate([np.zeros((12, 1)), np.cumsum(chroma, axis=1, dtype=np.float64)], axis=1)
    last = chroma.shape[1]
    keys = []
    for s in np.asarray(start_frames, dtype=np.int64):
        a, b = min(max(int(s), 0), last), min(max(int(s) + n_frames, 0), last)
        keys.append(find_key(cum[:, b] - cum[:, a]) if b > a else None)
    return keys
