# The Python the project's scripts run, as the Makefile picks it: $PYTHON, else the checkout's
# .venv (scripts/setup and install-deps make it where the system Python is externally managed,
# as Debian's is: its python3 has none of the packages), else python3 on PATH.
# Usage: . scripts/lib/python.sh; "$(project_python ROOT)" ...
project_python() {
  local py=${PYTHON:-$1/.venv/bin/python}
  [[ -x $py ]] || py=python3
  echo "$py"
}
