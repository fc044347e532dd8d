#!/usr/bin/env bash
# System packages the test suite exercises (no ffmpeg: PyAV decodes in-process): Chromium
# with its driver (the web page's browser tests), nginx (the scale-out load balancer's config,
# and two replicas behind it) and a Compose CLI (the scale-out file's `config` check;
# docker-compose, unless the docker client has its compose plugin), and the studio-mix
# generator's band (mma, fluidsynth and three General MIDI soundfonts: the tests render a few
# bars; model/training/band.py). Installs only what is
# missing, from Debian's packages, when run as root; otherwise says what to install and
# exits 0, so `make test` still runs and reports the tests that need them as skipped.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 ||
  missing+=(docker-compose)
command -v mma >/dev/null 2>&1 || missing+=(mma)
command -v fluidsynth >/dev/null 2>&1 || missing+=(fluidsynth)
[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || missing+=(fluid-soundfont-gm)
[ -e /usr/share/sounds/sf3/MuseScore_General.sf3 ] || missing+=(musescore-general-soundfont)
[ -f /usr/share/sounds/sf2/TimGM6mb.sf2 ] || missing+=(timgm6mb-soundfont)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${missing[*]}; install them (Debian: apt-get install -y ${missing[*]})" >&2
  exit 0
fi
echo "system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
