# perf/lib.sh — shell helpers shared by perf/run.sh and perf/soak.sh (sourced, not run).
# The sourcing script sets STOP_TIMEOUT_S before calling stop_pid.

# TERM, then KILL after STOP_TIMEOUT_S; only ever a PID the calling script started. A process that has
# already exited is reaped, so no zombie is left behind either way.
stop_pid() {
  local pid=$1 deadline
  [[ -n $pid ]] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((EPOCHSECONDS + STOP_TIMEOUT_S))
  while kill -0 "$pid" 2>/dev/null && ((EPOCHSECONDS < deadline)); do sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
