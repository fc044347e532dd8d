"""Which audio container a file is, from its first bytes (magic numbers), never its name.

`sniff` names one of a fixed whitelist of FFmpeg demuxers, and only that demuxer ever reads
the bytes: nothing is probed, so no byte string can select a demuxer that opens other files
or URLs (concat and its `ffconcat` scripts, HLS and DASH playlists, image2 file patterns,
`subfile`, ...). Text, images and every other container are None: not audio we decode.

The signatures are those FFmpeg's own probes check for these formats. MPEG audio (mp3) and
ADTS AAC have no file header, only 11- or 12-bit frame syncs, so after any ID3v2 tags a
frame header must be followed by a second one where the first one's length says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO


@dataclass(frozen=True)
class Container:
    """A whitelisted container: `demuxer` is FFmpeg's name for it; `sndfile`: libsndfile
    reads it first, where it costs less CPU than PyAV (`bench/bench_decoders.py`: FLAC 12 %
    and MP3 30 % less, WAV alike; Ogg Vorbis 14 % more, so PyAV reads that)."""

    name: str
    demuxer: str
    sndfile: bool = False


WAV = Container("wav", "wav", sndfile=True)
W64 = Container("w64", "w64", sndfile=True)
AIFF = Container("aiff", "aiff", sndfile=True)
FLAC = Container("flac", "flac", sndfile=True)
OGG = Container("ogg", "ogg")  # vorbis, opus, flac in ogg
MP3 = Container("mp3", "mp3", sndfile=True)
AAC = Container("aac", "aac")  # ADTS
MP4 = Container("mp4", "mov")  # mp4, m4a, mov, 3gp
MATROSKA = Container("matroska", "matroska")  # webm, mka
ASF = Container("asf", "asf")  # wma

# File extensions of those containers (the indexer's walk, error answers).
SUPPORTED_FORMATS = (
    *("wav", "flac", "ogg", "opus", "mp3", "aiff", "aif"),
    *("m4a", "aac", "mp4", "webm", "wma"),
)
HEAD_BYTES = 64 * 1024  # where a frame sync must show, after any ID3v2 tags
_W64_GUID = bytes.fromhex("726966662e91cf11a5d628db04c10000")
_ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_EBML = b"\x1a\x45\xdf\xa3"
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")
_MAX_ID3_TAGS = 8  # a file may repeat tags; each one's size is read, so stop somewhere


def unsupported_message(reason: str = "") -> str:
    """The text of an UnsupportedFormatError: the supported formats, and `reason`, one of
    this project's fixed phrases (never a decoder's message, which can name files)."""
    msg = "not a decodable audio file; supported formats: " + ", ".join(SUPPORTED_FORMATS)
    return msg + (f" [{reason}]" if reason else "")


def sniff(f: BinaryIO) -> Container | None:
    """The container of the seekable binary file `f` (read from its start; the position is
    restored), or None when it is none of the whitelist."""
    start = f.tell()
    try:
        f.seek(0)
        head = f.read(64)
        if (found := _by_header(head)) is not None:
            return found
        offset = 0
        for _ in range(_MAX_ID3_TAGS):  # mp3 (or FLAC, AAC) behind ID3v2 tags
            size = _id3_size(head)
            if size is None:
                break
            offset += size
            f.seek(offset)
            head = f.read(64)
            if head.startswith(b"fLaC"):
                return FLAC
        f.seek(offset)
        return _by_frames(f.read(HEAD_BYTES))
    finally:
        f.seek(start)


def _by_header(head: bytes) -> Container | None:
    kind = head[8:12]
    if head[:4] in (b"RIFF", b"RIFX", b"RF64", b"BW64") and kind == b"WAVE":
        return WAV
    if head[:4] == b"FORM" and kind in (b"AIFF", b"AIFC"):
        return AIFF
    if head.startswith(_W64_GUID):
        return W64
    if head.startswith(b"fLaC"):
        return FLAC
    if head.startswith(b"OggS"):
        return OGG
    if head[4:8] in _MP4_BOXES:
        return MP4
    if head.startswith(_EBML):
        return MATROSKA
    if head.startswith(_ASF_GUID):
        return ASF
    return None


def _id3_size(head: bytes) -> int | None:
    """Bytes of the ID3v2 tag at the start of `head` (header and footer included), or None."""
    if len(head) < 10 or not head.startswith(b"ID3") or head[3] == 0xFF or head[4] == 0xFF:
        return None
    size = head[6:10]
    if any(b & 0x80 for b in size):  # syncsafe: 7 bits a byte
        return None
    n = (size[0] << 21) | (size[1] << 14) | (size[2] << 7) | size[3]
    return 10 + n + (10 if head[5] & 0x10 else 0)


# -- MPEG audio and ADTS frame headers ---------------------------------------------------------
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_BITRATES = {  # kbit/s by (MPEG-1?, layer), index 1-14
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_BITRATES[(False, 3)] = _BITRATES[(False, 2)]
_ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


def _mpeg_frame_length(h: bytes) -> int | None:
    """Length in bytes of the MPEG audio (layer I-III) frame whose header starts `h`."""
    if len(h) < 4 or h[0] != 0xFF or h[1] & 0xE0 != 0xE0:
        return None
    version, layer = (h[1] >> 3) & 3, 4 - ((h[1] >> 1) & 3)  # version 1: reserved
    bitrate_index, rate_index = h[2] >> 4, (h[2] >> 2) & 3
    if version == 1 or layer == 4 or bitrate_index in (0, 15) or rate_index == 3:
        return None  # layer 4: the ADTS sync; bitrate 0: "free format", not sniffed
    mpeg1 = version == 3
    bitrate = 1000 * _BITRATES[(mpeg1, layer)][bitrate_index - 1]
    rate = _MPEG_RATES[version][rate_index]
    padding = (h[2] >> 1) & 1
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4
    per_frame = 144 if layer == 2 or mpeg1 else 72
    return per_frame * bitrate // rate + padding


def _adts_frame_length(h: bytes) -> int | None:
    """Length in bytes of the ADTS (AAC) frame whose header starts `h`."""
    if len(h) < 7 or h[0] != 0xFF or h[1] & 0xF6 != 0xF0:
        return None
    if (h[2] >> 2) & 0xF >= len(_ADTS_RATES):
        return None
    length = ((h[3] & 0x03) << 11) | (h[4] << 3) | (h[5] >> 5)
    header = 7 if h[1] & 1 else 9  # protection_absent, else a CRC follows
    return length if length > header else None


def _by_frames(data: bytes) -> Container | None:
    """mp3 or ADTS AAC: the first frame sync in `data` followed by more frames where each
    one's length says: one more at the start of `data`, two more after other bytes (junk or
    padding; a random byte string passes that test about once in 10^5)."""
    at = data.find(b"\xff")
    while 0 <= at < len(data) - 4:
        for container, length_of in ((MP3, _mpeg_frame_length), (AAC, _adts_frame_length)):
            frames, pos = 0, at
            while frames < 3 and (length := length_of(data[pos : pos + 9])) is not None:
                frames, pos = frames + 1, pos + length
            if frames >= (2 if at == 0 else 3):
                return container
        at = data.find(b"\xff", at + 1)
    return None
