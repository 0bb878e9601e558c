#!/usr/bin/env bash
# Makes sure a Docker engine answers. When `docker info` fails, starts Debian's dockerd (package
# docker.io) in the background as root, without iptables rules or a bridge (builds use the host's
# network, tests run containers with --network none), logging to
# ${XDG_CACHE_HOME:-~/.cache}/mce-operator/dockerd.log, and waits for it (MCE_DOCKERD_TIMEOUT seconds,
# default 60). There is no systemd here; the engine keeps running after this script. Exits non-zero
# with one line saying what is missing when no engine answers.
set -euo pipefail

log=${XDG_CACHE_HOME:-$HOME/.cache}/mce-operator/dockerd.log
timeout_s=${MCE_DOCKERD_TIMEOUT:-60}
fail() { printf 'dockerd: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null || fail "docker not found: install docker.io (.ci/apt-packages)"
answers() { timeout 10 docker info >/dev/null 2>&1; }
answers && exit 0

command -v dockerd >/dev/null || fail "no Docker engine answers and dockerd is not installed: install docker.io (.ci/apt-packages)"
[ "$(id -u)" = 0 ] || fail "no Docker engine answers and only root can start dockerd: start it, or run as root"
if pid=$(pgrep -x dockerd); then
  fail "dockerd is running (pid ${pid//$'\n'/ }) but does not answer \`docker info\`: see $log or its own log"
fi

mkdir -p "$(dirname "$log")"
printf '\n--- %s: dockerd --iptables=false --bridge=none\n' "$(date -u +%FT%TZ)" >>"$log"
# Its own session, so nothing that signals the caller's process group stops the engine.
setsid dockerd --iptables=false --bridge=none </dev/null >>"$log" 2>&1 &
pid=$!
deadline=$(( $(date +%s) + timeout_s ))
until answers; do
  kill -0 "$pid" 2>/dev/null || fail "dockerd exited at start: $(tail -n 3 "$log" | tr '\n' ' ')(log: $log)"
  [ "$(date +%s)" -lt "$deadline" ] || fail "dockerd (pid $pid) did not answer within ${timeout_s}s: see $log"
  sleep 0.5
done
printf 'dockerd: started (pid %s), log %s\n' "$pid" "$log"
