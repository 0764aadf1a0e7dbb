# Sourced by the install scripts: facts about this machine's Debian package sources.

# The Debian mirror this machine's apt uses (MIRROR overrides): the first non-security URI of
# /etc/apt/sources.list.d/debian.sources (deb822) or of /etc/apt/sources.list.
debian_mirror() {
  if [[ -n ${MIRROR:-} ]]; then echo "$MIRROR"; return; fi
  local uri=
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    uri=$(awk '/^URIs:/ && !/security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [[ -z $uri && -f /etc/apt/sources.list ]]; then
    uri=$(awk '$1 == "deb" && !/security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' \
      /etc/apt/sources.list)
  fi
  [[ -n $uri ]] || { echo "no Debian mirror found in /etc/apt (set MIRROR=URL)" >&2; return 1; }
  echo "${uri%/}"
}
