"""Dense band accompaniment from General MIDI: MMA grooves rendered by FluidSynth.

`mma` (Musical MIDI Accompaniment) turns a groove of its standard library (drums, bass,
guitars, keys, strings: rock, pop, ballad, funk, country, latin, jazz ...) and a chord chart
into a MIDI file; `fluidsynth` renders it with a General MIDI soundfont. A `BandSpec` (groove,
tempo, chords, soundfont) is drawn at random from a seed, so the same seed gives the same
band. The groove files and the soundfonts are split once: `HELDOUT_SOUNDFONT` and every
`HELDOUT_EVERY`-th groove file (sorted by name) never enter training, for the studio
evaluation (`model.evaluation.studio_eval`).

Both programs come from Debian (`mma`, `fluidsynth`, `fluid-soundfont-gm`,
`musescore-general-soundfont`, `timgm6mb-soundfont`; `scripts/system-deps.sh` installs them).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from model.audio import resample

GROOVE_DIR = Path("/usr/share/mma/lib/stdlib")
#: name -> soundfont file (Debian paths)
SOUNDFONTS = {
    "fluidr3": "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "musescore": "/usr/share/sounds/sf3/MuseScore_General.sf3",
    "timgm6mb": "/usr/share/sounds/sf2/TimGM6mb.sf2",
}
#: the soundfont no training mix is rendered with: the most detailed of the three (and about
#: six times slower to render than FluidR3), so the evaluation hears the most record-like band
HELDOUT_SOUNDFONT = "musescore"
#: every n-th groove file by sorted name is held out of training
HELDOUT_EVERY = 6
#: groove files that are not a band (a click track, silence)
NOT_BANDS = ("metronome", "none")
SPLITS = ("train", "heldout")

NOTE_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
#: chord charts as (semitones above the key, quality) per bar; "" major, "m" minor, "7" ...
MAJOR_PROGRESSIONS = (
    ((0, ""), (7, ""), (9, "m"), (5, "")),  # I V vi IV
    ((9, "m"), (5, ""), (0, ""), (7, "")),  # vi IV I V
    ((0, ""), (9, "m"), (5, ""), (7, "")),  # I vi IV V
    ((0, ""), (5, ""), (7, ""), (5, "")),  # I IV V IV
    ((2, "m7"), (7, "7"), (0, "maj7"), (0, "maj7")),  # ii V I
    ((0, ""), (4, "m"), (5, ""), (7, "")),  # I iii IV V
    ((5, ""), (7, ""), (4, "m"), (9, "m")),  # IV V iii vi
    ((0, ""), (0, ""), (5, ""), (7, "7")),  # I I IV V7
)
MINOR_PROGRESSIONS = (
    ((0, "m"), (8, ""), (3, ""), (10, "")),  # i VI III VII
    ((0, "m"), (5, "m"), (7, "m"), (0, "m")),  # i iv v i
    ((0, "m"), (10, ""), (8, ""), (7, "7")),  # i VII VI V7
    ((0, "m"), (3, ""), (10, ""), (5, "m")),  # i III VII iv
)
BLUES = (
    ((0, "7"),) * 4 + ((5, "7"),) * 2 + ((0, "7"),) * 2 + ((7, "7"), (5, "7"), (0, "7"), (7, "7"))
)


class BandRenderError(RuntimeError):
    """mma or fluidsynth failed, or is not installed."""


@dataclass(frozen=True)
class BandSpec:
    """One band track: MMA groove, tempo (BPM), chord per bar, soundfont name, MIDI velocity
    scale (%) and MMA's random seed."""

    groove: str
    tempo: int
    chords: tuple[str, ...]
    soundfont: str
    volume: int = 100
    seed: int = 0  # MMA's random seed (its grooves humanise timing and velocity at random)

    def to_dict(self) -> dict:
        return asdict(self)


def _groove_names(text: str) -> list[str]:
    """The grooves a groove file defines (`DefGroove NAME`), intros, endings and fills left out
    (a band track is the body of a song)."""
    names = re.findall(r"^\s*DefGroove\s+(\S+)", text, flags=re.IGNORECASE | re.MULTILINE)
    skip = ("intro", "end", "fill", "break")
    return [n for n in dict.fromkeys(names) if not any(s in n.lower() for s in skip)]


@functools.cache
def groove_library(root: str | Path = GROOVE_DIR) -> dict[str, tuple[str, ...]]:
    """Groove file stem -> the body grooves it defines, for every band groove file under
    `root` (sorted by file name; click tracks and `none` left out)."""
    out: dict[str, tuple[str, ...]] = {}
    for f in sorted(Path(root).glob("*.mma")):
        if f.stem.startswith(NOT_BANDS):
            continue
        names = _groove_names(f.read_text(encoding="latin-1"))
        if names:
            out[f.stem] = tuple(names)
    return out


def groove_split(stem: str, library: dict[str, tuple[str, ...]] | None = None) -> str:
    """'heldout' for every HELDOUT_EVERY-th groove file by sorted name (from the 3rd), else
    'train'."""
    stems = list(library if library is not None else groove_library())
    return "heldout" if stems.index(stem) % HELDOUT_EVERY == 2 else "train"


def split_grooves(split: str, root: str | Path = GROOVE_DIR) -> dict[str, tuple[str, ...]]:
    """The groove files (stem -> grooves) of one split ('train' or 'heldout')."""
    if split not in SPLITS:
        raise ValueError(f"split: one of {SPLITS}, not {split!r}")
    lib = groove_library(root)
    return {s: g for s, g in lib.items() if groove_split(s, lib) == split}


def split_soundfonts(split: str) -> tuple[str, ...]:
    """Soundfont names of one split: the held-out one alone, or all the others."""
    if split not in SPLITS:
        raise ValueError(f"split: one of {SPLITS}, not {split!r}")
    if split == "heldout":
        return (HELDOUT_SOUNDFONT,)
    return tuple(n for n in SOUNDFONTS if n != HELDOUT_SOUNDFONT)


def chord_chart(rng: np.random.Generator, bars: int, blues: bool = False) -> tuple[str, ...]:
    """`bars` chord symbols (MMA spelling) of a random key and a random common progression,
    repeated (a 12-bar blues for blues grooves)."""
    key = int(rng.integers(12))
    prog: tuple[tuple[int, str], ...]
    if blues:
        prog = BLUES
    elif rng.random() < 0.7:
        prog = MAJOR_PROGRESSIONS[rng.integers(len(MAJOR_PROGRESSIONS))]
    else:
        prog = MINOR_PROGRESSIONS[rng.integers(len(MINOR_PROGRESSIONS))]
    return tuple(NOTE_NAMES[(key + step) % 12] + q for step, q in (prog * bars)[:bars])


def draw_band(rng: np.random.Generator, split: str, bars: int = 32) -> BandSpec:
    """A random band of `split`'s grooves and soundfonts: tempo 70-150 BPM (x0.5-1.0 for
    ballads and waltzes would be slower, so they draw from 60-110), velocity 80-110 %."""
    grooves = split_grooves(split)
    stem = sorted(grooves)[rng.integers(len(grooves))]
    names = grooves[stem]
    groove = names[rng.integers(len(names))]
    slow = any(w in stem for w in ("ballad", "waltz", "slow", "lullaby", "hymn", "spiritual"))
    tempo = int(rng.integers(60, 111) if slow else rng.integers(70, 151))
    fonts = split_soundfonts(split)
    return BandSpec(
        groove=groove,
        tempo=tempo,
        chords=chord_chart(rng, bars, blues="blues" in stem or "boogie" in stem),
        soundfont=fonts[rng.integers(len(fonts))],
        volume=int(rng.integers(80, 111)),
        seed=int(rng.integers(1 << 30)),
    )


def mma_source(spec: BandSpec) -> str:
    """The MMA chart of a band: seed, tempo, groove, one chord per bar."""
    lines = [
        f"RndSeed {spec.seed}",
        f"Tempo {spec.tempo}",
        f"Groove {spec.groove}",
        f"Volume {spec.volume}",
    ]
    lines += [f"{i + 1} {chord}" for i, chord in enumerate(spec.chords)]
    return "\n".join(lines) + "\n"


def _run(cmd: list[str], cwd: Path, timeout: float) -> None:
    if shutil.which(cmd[0]) is None:
        raise BandRenderError(f"{cmd[0]} is not installed (scripts/system-deps.sh installs it)")
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise BandRenderError(f"{cmd[0]} took over {timeout:.0f} s") from err
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise BandRenderError(f"{cmd[0]} failed ({done.returncode}): {' | '.join(tail)}")


def render_band(spec: BandSpec, sr: int, timeout: float = 300.0) -> np.ndarray:
    """The band as mono float32 (samples,) at `sr` Hz: MMA writes the MIDI file, FluidSynth
    renders it at `sr` (at least 22.05 kHz, its lowest rate), and the stereo render is
    downmixed (and resampled if `sr` is lower). Raises BandRenderError (the groove's
    MIDI is empty or a program failed)."""
    font = SOUNDFONTS[spec.soundfont]
    with tempfile.TemporaryDirectory(prefix="band-") as tmp:
        work = Path(tmp)
        (work / "band.mma").write_text(mma_source(spec), encoding="utf-8")
        _run(["mma", "-f", "band.mid", "band.mma"], work, timeout)
        if not (work / "band.mid").is_file():
            raise BandRenderError(f"mma wrote no MIDI for groove {spec.groove}")
        rate = str(max(sr, 22050))  # fluidsynth's lowest rate
        _run(
            ["fluidsynth", "-ni", "-g", "0.5", "-F", "band.wav", "-r", rate, font, "band.mid"],
            work,
            timeout,
        )
        y, file_sr = sf.read(work / "band.wav", dtype="float32", always_2d=True)
    y = trim_tail(y.mean(axis=1), file_sr)
    if len(y) < file_sr:
        raise BandRenderError(f"groove {spec.groove} rendered under a second of sound")
    return resample(y, file_sr, sr)


def trim_tail(y: np.ndarray, sr: int, floor_db: float = -40.0, window_s: float = 0.1) -> np.ndarray:
    """`y` (samples,) up to the end of its last `window_s` window within `floor_db` of the
    loudest window: the instruments' release tails after the last bar go (a crop in them
    is near silence, which a mastering limiter would lift by tens of dB)."""
    w = max(1, int(window_s * sr))
    k = len(y) // w
    if k == 0:
        return y[:0]
    level = np.sqrt(np.mean(np.square(y[: k * w].reshape(k, w), dtype=np.float64), axis=1))
    loud = np.flatnonzero(level > level.max() * 10.0 ** (floor_db / 20.0))
    return y[: (int(loud[-1]) + 1) * w] if level.max() > 0 and len(loud) else y[:0]
