#!/bin/sh
# Container entry point.
#   serve            the HTTP service (python -m service, configured by SINGER_* variables)
#   index ARGS...    the batch indexer (python -m indexer ARGS...)
#   anything else    run as a command (e.g. `bash`, `python -m model embed ...`; the image
#                    has no research code, so `train` and `evaluate` are not there)
set -eu
cmd="${1:-serve}"
[ $# -gt 0 ] && shift
case "$cmd" in
  serve) exec python -m service "$@" ;;
  index) exec python -m indexer "$@" ;;
  *) exec "$cmd" "$@" ;;
esac
