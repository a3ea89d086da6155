# shellcheck shell=bash
# Facts about this machine that the measuring scripts record next to their numbers.

# The CPU model of /proc/cpuinfo ("unknown" where there is none).
drolt_cpu_model() {
  local m
  m=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
  echo "${m:-unknown}"
}
