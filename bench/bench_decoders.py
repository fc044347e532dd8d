"""Decoding one upload, per format: the decoders before and after PyAV, in one paired run.

    python bench/bench_decoders.py [--seconds 30] [--takes 4] [--rounds 7]
                                   [--before 15c6c13] [--json out.json]

Uploads: `--takes` stereo takes of `--seconds` at 44.1 kHz (MIR-1K voice + accompaniment when
the data set is there, else bench.workload's synthetic voice), as FLAC, 16-bit WAV, MP3 and
Ogg Vorbis (libsndfile's encoders), M4A (AAC, 128 kbit/s) and WebM (Opus, 48 kHz: what a
browser records), both by PyAV. Each is decoded from bytes to mono float32 at 22050 Hz with a
600-s limit, as the service decodes an upload, by:

- before: `model/audio.py` as of commit `--before` (loaded from git): libsndfile, and for
  M4A and WebM `ffprobe` plus an `ffmpeg` subprocess reading a temporary file;
- after: today's `model.audio.load_audio`;
- libsndfile / pyav: one decoder forced (`model.sndfile_decoder`, `model.pyav_decoder`),
  for the formats both read: which one `after` should use;
- after, 2 parts: FLAC and WAV decoded in two pieces, the second on another thread.

Rounds alternate the decoders' order. Reported per format and decoder, medians over rounds
of the mean per upload: wall ms, and CPU ms of this process and its children (the ffmpeg
subprocesses). Ratios are to `before`. Outputs are checked: for FLAC and WAV every decoder
gives `before`'s samples exactly. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.workload import UPLOAD_SR, mir1k_takes, synthetic_take
from model.audio import load_audio
from model.audio_containers import sniff
from model.pyav_decoder import decode_av
from model.sndfile_decoder import decode_sndfile

SR, LIMIT_S = 22050, 600.0


def cpu_s() -> float:
    """CPU seconds of this process and its finished children."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def old_audio_module(commit: str):
    """`model/audio.py` as of `commit`, imported as a module of its own."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{commit}:model/audio.py"],
        capture_output=True, check=True, text=True,
    ).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp()) / "audio_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("audio_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pyav_encoded(y: np.ndarray, sr: int, muxer: str, codec: str, rate: int) -> bytes:
    """A stereo take at `sr` Hz encoded by PyAV (128 kbit/s, at the codec's `rate`)."""
    out = io.BytesIO()
    with av.open(out, "w", format=muxer) as container:
        stream = container.add_stream(codec, rate=rate, layout="stereo")
        stream.bit_rate = 128_000
        planar = np.ascontiguousarray(y.T)
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout="stereo")
        frame.sample_rate = sr
        ctx = stream.codec_context
        resampler = av.AudioResampler(ctx.format.name, "stereo", rate, frame_size=ctx.frame_size)
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            container.mux(stream.encode(chunk))
        container.mux(stream.encode(None))
    return out.getvalue()


def encoded(takes: list[np.ndarray]) -> dict[str, list[bytes]]:
    def soundfile(y: np.ndarray, **kw) -> bytes:
        buf = io.BytesIO()
        sf.write(buf, y, UPLOAD_SR, **kw)
        return buf.getvalue()

    return {
        "FLAC": [soundfile(y, format="FLAC") for y in takes],
        "WAV": [soundfile(y, format="WAV", subtype="PCM_16") for y in takes],
        "MP3": [soundfile(y, format="MP3") for y in takes],
        "OGG": [soundfile(y, format="OGG", subtype="VORBIS") for y in takes],
        "M4A": [pyav_encoded(y, UPLOAD_SR, "mp4", "aac", UPLOAD_SR) for y in takes],
        "WEBM": [pyav_encoded(y, UPLOAD_SR, "webm", "libopus", 48000) for y in takes],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--takes", type=int, default=4)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--before", default="15c6c13", help="commit of the decoder before PyAV")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    before = old_audio_module(args.before)
    takes = mir1k_takes(args.takes, args.seconds)
    source = "MIR-1K voice + accompaniment"
    if takes is None:
        takes = [synthetic_take(args.seconds, i) for i in range(args.takes)]
        source = "synthetic voice"
    uploads = encoded(takes)
    helper = ThreadPoolExecutor(1)

    def pyav(data: bytes) -> np.ndarray:
        container = sniff(io.BytesIO(data))
        assert container is not None
        return decode_av(io.BytesIO(data), container, SR, LIMIT_S, None)[0]

    decoders: dict[str, Callable[[bytes], np.ndarray]] = {
        "before": lambda data: before.load_audio(data, SR, LIMIT_S),
        "after": lambda data: load_audio(data, SR, LIMIT_S),
        "libsndfile": lambda data: decode_sndfile(data, SR, LIMIT_S, None)[0],
        "pyav": pyav,
        "after, 2 parts": lambda data: load_audio(data, SR, LIMIT_S, parts=2, executor=helper),
    }
    both = ("FLAC", "WAV", "MP3", "OGG")  # the formats both libraries read
    formats_of = {"libsndfile": both, "pyav": both, "after, 2 parts": ("FLAC", "WAV")}
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {f: {} for f in uploads}
    for r in range(args.rounds):
        names = list(decoders) if r % 2 == 0 else list(reversed(decoders))
        for fmt, bodies in uploads.items():
            outputs = {}
            for name in names:
                if fmt not in formats_of.get(name, uploads):
                    continue
                cpu, start = cpu_s(), time.perf_counter()
                outputs[name] = [decoders[name](data) for data in bodies]
                wall, cpu = time.perf_counter() - start, cpu_s() - cpu
                runs[fmt].setdefault(name, []).append(
                    (1000 * wall / len(bodies), 1000 * cpu / len(bodies))
                )
            if r == 0 and fmt in ("FLAC", "WAV"):
                for name in ("after", "libsndfile", "pyav", "after, 2 parts"):
                    for a, b in zip(outputs["before"], outputs[name], strict=True):
                        np.testing.assert_array_equal(a, b)
    helper.shutdown()
    result: dict = {"source": source, "seconds": args.seconds, "takes": args.takes,
                    "rounds": args.rounds, "before": args.before, "formats": {}}  # fmt: skip
    for fmt, by in runs.items():
        med = {
            n: {"wall_ms": statistics.median(w for w, _ in v),
                "cpu_ms": statistics.median(c for _, c in v)}
            for n, v in by.items()
        }  # fmt: skip
        for n in med:
            med[n]["wall_over_before"] = med[n]["wall_ms"] / med["before"]["wall_ms"]
        result["formats"][fmt] = med
        size_kb = statistics.mean(len(b) for b in uploads[fmt]) / 1024
        print(f"{fmt} ({size_kb:.0f} KB, {args.seconds:.0f} s):")
        for n, m in med.items():
            print(f"  {n:15} {m['wall_ms']:7.1f} ms wall  {m['cpu_ms']:7.1f} ms CPU  "
                  f"x{m['wall_over_before']:.2f} of before")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
