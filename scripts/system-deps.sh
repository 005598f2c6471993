#!/usr/bin/env bash
# Installs the Debian packages Sandra needs when they are missing:
# espeak-ng (offline TTS, also used by tests to synthesize speech), chromium (browser tests)
# and coturn (the TURN relay test).
set -euo pipefail
need=()
[ -e /usr/lib/x86_64-linux-gnu/libespeak-ng.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/libespeak-ng.so.1 ] \
  || ldconfig -p 2>/dev/null | grep -q libespeak-ng.so.1 || need+=(espeak-ng libespeak-ng1)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v chromium >/dev/null || need+=(chromium)
# --- issue 11 (security): coturn, a real TURN server for the relay test (started by the test on 127.0.0.1)
command -v turnserver >/dev/null || need+=(coturn)
# --- end issue 11
# issue 12 (cluster): redis-server, for `--workers N` without REDIS_URL and for the cluster tests
command -v redis-server >/dev/null || need+=(redis-server)
# issue 14 (firefox): the browser tests also run in Firefox ESR (driven by Playwright over
# WebDriver BiDi), whose microphone is a private PulseAudio daemon's virtual source
# (pulseaudio-utils: pactl, paplay, parec, pacat).
command -v firefox-esr >/dev/null || need+=(firefox-esr)
command -v pulseaudio >/dev/null || need+=(pulseaudio)
for tool in pactl paplay parec pacat; do command -v "$tool" >/dev/null || { need+=(pulseaudio-utils); break; }; done
# issue 14 (spanish): human speech for tests/speech: Allison's Asterisk prompts (CC BY-SA) and
# the packages listing their texts (core-sounds-{en,es}.txt.gz)
[ -d /usr/share/asterisk/sounds/en_US_f_Allison ] || need+=(asterisk-core-sounds-en-wav)
[ -d /usr/share/asterisk/sounds/es_MX_f_Allison ] || need+=(asterisk-core-sounds-es-wav)
[ -e /usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz ] || need+=(asterisk-core-sounds-en)
[ -e /usr/share/doc/asterisk-core-sounds-es/core-sounds-es.txt.gz ] || need+=(asterisk-core-sounds-es)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  echo "Installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  echo "Installing system packages with sudo: ${need[*]}"
  sudo apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "Sandra needs these Debian packages: ${need[*]}" >&2
  echo "Install them with: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
