#!/usr/bin/env bash
# The exactness tests under other CPUs' kernels, on this machine (make test-portability).
#
# Every combination of ATEN_CPU_CAPABILITY (PyTorch's vectorised kernels: scalar
# "default", avx2, avx512), ONEDNN_MAX_CPU_ISA (oneDNN's convolutions: SSE41, AVX2,
# AVX512_CORE, DEFAULT = no cap) and 1 or 2 threads runs the tests that compare
# float32 results (official vectors, fast against plain paths, the benchmark's
# exactness). oneDNN caps at what the CPU has, so a cap above it runs the same kernels as
# a lower one: each distinct combination runs once (its line names the kernels really
# used) and the duplicates are listed. PyTorch does not cap ATEN_CPU_CAPABILITY=avx512:
# on a CPU without AVX-512 those settings cannot run and are listed as such. On a CPU
# with AVX-512 all 24 settings are distinct. The tests that break the
# network on purpose (test_duconet.py) check the check itself and run in make test.
#
# Every comparison's distance-to-rounding ratio goes to $IHARM_FLOAT_BOUNDS_LOG
# (default portability_ratios.jsonl), summarised at the end: the measured worst
# ratio of tests/float_bounds.py. Exit status 1 when any combination fails.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
TESTS=(tests/test_duconet.py tests/test_fast_paths.py tests/test_bargainnet.py tests/test_issam.py
       tests/test_benchmark.py)
export IHARM_FLOAT_BOUNDS_LOG=${IHARM_FLOAT_BOUNDS_LOG:-$PWD/portability_ratios.jsonl}
: > "$IHARM_FLOAT_BOUNDS_LOG"
# oneDNN runs the best ISA up to its cap that this CPU has.
if grep -qw avx512f /proc/cpuinfo; then onednn_best=AVX512_CORE
elif grep -qw avx2 /proc/cpuinfo; then onednn_best=AVX2
else onednn_best=SSE41; fi
onednn_used() {
  case "$1:$onednn_best" in
    DEFAULT:*|AVX512_CORE:*) echo "$onednn_best" ;;
    AVX2:SSE41) echo SSE41 ;;
    *) echo "$1" ;;
  esac
}
failed=()
declare -A ran
runs=0
# PyTorch does not clamp ATEN_CPU_CAPABILITY to the CPU: avx512 kernels on a CPU without AVX-512 stop
# with "Illegal instruction". Such settings cannot run here and are listed as such.
has_avx512=yes
for flag in avx512f avx512bw avx512vl avx512dq; do grep -qw "$flag" /proc/cpuinfo || has_avx512=no; done
cannot=0
for aten in default avx2 avx512; do
  if [ "$aten" = avx512 ] && [ "$has_avx512" = no ]; then
    echo "cannot  ATEN_CPU_CAPABILITY=avx512 (all 8 settings): this CPU lacks AVX-512 (avx512f/bw/vl/dq), and PyTorch would run its AVX-512 kernels anyway"
    cannot=8
    continue
  fi
  used=$(ATEN_CPU_CAPABILITY=$aten "$PY" -c "import torch; print(torch.backends.cpu.get_cpu_capability())")
  for isa in SSE41 AVX2 AVX512_CORE DEFAULT; do
    for threads in 1 2; do
      setting="ATEN_CPU_CAPABILITY=$aten ONEDNN_MAX_CPU_ISA=$isa threads=$threads"
      kernels="PyTorch $used, oneDNN $(onednn_used "$isa"), $threads thread(s)"
      # A cap above this CPU falls back to what it has: the same kernels run again would measure nothing new.
      if [ -n "${ran[$kernels]:-}" ]; then
        echo "same    $setting: the kernels of '${ran[$kernels]}' on this CPU ($kernels)"
        continue
      fi
      ran[$kernels]=$setting
      runs=$((runs + 1))
      start=$SECONDS
      if ATEN_CPU_CAPABILITY=$aten ONEDNN_MAX_CPU_ISA=$isa OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads \
          "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}" -k "not catches_a_broken" \
          > /tmp/iharm_portability.log 2>&1; then
        echo "ok      $setting ($kernels) $((SECONDS - start)) s: $(tail -n 1 /tmp/iharm_portability.log)"
      else
        echo "FAILED  $setting ($kernels): $(tail -n 1 /tmp/iharm_portability.log)"
        grep -E "^(FAILED|ERROR)" /tmp/iharm_portability.log | sed 's/^/        /'
        failed+=("$setting")
      fi
    done
  done
done
"$PY" tests/float_bounds.py "$IHARM_FLOAT_BOUNDS_LOG"
if [ ${#failed[@]} -gt 0 ]; then
  echo "${#failed[@]} of the $runs distinct kernel settings failed"
  exit 1
fi
echo "$runs distinct kernel settings run on this CPU, each passed; $((24 - runs - cannot)) the same kernels as one of them; $cannot not runnable here"
