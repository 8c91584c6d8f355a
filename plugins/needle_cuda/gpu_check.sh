#!/usr/bin/env bash
# One call on a machine with a GPU and no network: build and install needle-core, needle-numpy
# and needle-cuda (pip --no-build-isolation), run the whole test suite on cuda (every dtype of
# contract v2; with torch, DLPack both ways with PyTorch), then benchmarks/bench_gpu.py against
# PyTorch. Logs go to $OUT when set (else a temp dir).
#
#   bash plugins/needle_cuda/gpu_check.sh
#
# Needs: python3 with pip, pybind11, scikit-build-core, pytest, numpy, pluggy and torch; nvcc
# (on PATH, $CUDACXX or /usr/local/cuda/bin). Settings (environment):
#   NEEDLE_CUDA_ARCHS   architectures to compile (default 90: Hopper only, to build fast)
#   PYTHON              interpreter (default python3)
#   BUILD_TIMEOUT, TEST_TIMEOUT, BENCH_TIMEOUT   seconds (default 240, 240, 120: < 8 min in all)
# Fallbacks, so a missing build tool cannot waste the GPU run: scikit-build-core needs cmake
# >= 3.24 (system or the `cmake` pip package) and uses ninja only if present; without cmake the
# extension is compiled by nvcc directly. Without hatchling (core's build backend) the pure-Python
# distributions are installed by hand (package + dist-info with their entry points, on
# PYTHONPATH). Without hypothesis, test files that import it unconditionally are left out (said
# in the log). Exit status: 0 when every step passed.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
LOGS=${OUT:-$(mktemp -d /tmp/needle_gpu_check.XXXX)}
mkdir -p "$LOGS"
WORK=$(mktemp -d /tmp/needle_gpu_work.XXXX)
PY=${PYTHON:-python3}
export NEEDLE_CUDA_ARCHS=${NEEDLE_CUDA_ARCHS:-90}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
# offline pip; a distribution's own python (PEP 668) still takes the installs
export NEEDLE_STRICT_PLUGINS=1 PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_BREAK_SYSTEM_PACKAGES=1
SUMMARY=$LOGS/summary.txt
: >"$SUMMARY"
FAILED=0
START=$SECONDS

note() { echo "[gpu_check +$((SECONDS - START))s] $*" | tee -a "$SUMMARY"; }
result() {  # result NAME RC
  if [ "$2" -eq 0 ]; then note "PASS $1"; else note "FAIL $1 (exit $2)"; FAILED=1; fi
}
has_module() { "$PY" -c "import $1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------- the machine
if ! command -v nvcc >/dev/null 2>&1; then
  for dir in ${CUDACXX:+$(dirname "$CUDACXX")} /usr/local/cuda/bin /usr/local/cuda-*/bin; do
    if [ -x "$dir/nvcc" ]; then export PATH="$dir:$PATH"; break; fi
  done
fi
{
  echo "## nvidia-smi"; nvidia-smi 2>&1 | head -20
  echo "## nvcc"; nvcc --version 2>&1 | tail -2
  echo "## cmake"; cmake --version 2>&1 | head -1
  echo "## python"; "$PY" -c "import sys; print(sys.version)"
  "$PY" -m pip list 2>/dev/null | grep -i -E "^(torch|numpy|pybind11|scikit.build.core|pytest|pluggy|hypothesis|hatchling|cmake|ninja) "
} >"$LOGS/machine.txt" 2>&1
cat "$LOGS/machine.txt"
note "archs=$NEEDLE_CUDA_ARCHS, build jobs=$CMAKE_BUILD_PARALLEL_LEVEL, logs in $LOGS"

# Installs a pure-Python distribution without a build backend: copies src/<package> and writes
# a dist-info (metadata + entry points) into $WORK/site, which goes on PYTHONPATH.
install_by_hand() {
  "$PY" - "$1" "$WORK/site" "${2:-}" <<'PYEOF'
import pathlib, shutil, sys, tomllib
project, site, prebuilt = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
site.mkdir(parents=True, exist_ok=True)
for pkg in (project / "src").iterdir():
    if pkg.is_dir() and (pkg / "__init__.py").exists():
        shutil.copytree(pkg, site / pkg.name, dirs_exist_ok=True)
if prebuilt:
    shutil.copy(prebuilt, site / "needle_cuda")
info = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
info.mkdir(exist_ok=True)
(info / "METADATA").write_text(
    f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n"
)
groups = dict(meta.get("entry-points", {}))
if meta.get("scripts"):
    groups["console_scripts"] = meta["scripts"]
(info / "entry_points.txt").write_text(
    "".join(
        f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
        for g, eps in groups.items()
    )
)
print(f"installed {meta['name']} by hand into {site}")
PYEOF
}

# -------------------------------------------------------------------------------- install
"$PY" -m pip uninstall -y -q needle-core needle-numpy needle-cuda >/dev/null 2>&1
if has_module hatchling; then
  "$PY" -m pip install --no-build-isolation --no-deps ./core ./plugins/needle_numpy \
    >"$LOGS/install_core.log" 2>&1
  result "install needle-core, needle-numpy (pip)" $?
else
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
  { install_by_hand ./core && install_by_hand ./plugins/needle_numpy; } >"$LOGS/install_core.log" 2>&1
  result "install needle-core, needle-numpy (by hand: hatchling missing)" $?
fi

cmake_ok=$("$PY" - <<'PYEOF'
import re, shutil, subprocess
try:
    import cmake  # noqa: F401  (the pip package brings a new enough one)
    print(1)
except ImportError:
    exe = shutil.which("cmake")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout if exe else ""
    m = re.search(r"(\d+)\.(\d+)", out)
    print(int(bool(m) and (int(m[1]), int(m[2])) >= (3, 24)))
PYEOF
)
if [ "$cmake_ok" = 1 ]; then
  timeout "${BUILD_TIMEOUT:-240}" "$PY" -m pip install --no-build-isolation --no-deps -v \
    ./plugins/needle_cuda -C "cmake.define.NEEDLE_CUDA_ARCHS=$NEEDLE_CUDA_ARCHS" \
    >"$LOGS/build_cuda.log" 2>&1
  result "build+install needle-cuda (scikit-build-core + CMake)" $?
else
  # No cmake >= 3.24: the same compile CMake would run, by nvcc directly.
  gencode=()
  for arch in ${NEEDLE_CUDA_ARCHS//;/ }; do
    num=${arch%%-*}
    case $arch in
      *-virtual) gencode+=(-gencode "arch=compute_$num,code=compute_$num") ;;
      *-real) gencode+=(-gencode "arch=compute_$num,code=sm_$num") ;;
      *) gencode+=(-gencode "arch=compute_$num,code=[sm_$num,compute_$num]") ;;
    esac
  done
  suffix=$("$PY" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
  {
    # shellcheck disable=SC2046  # the include flags are meant to split
    timeout "${BUILD_TIMEOUT:-240}" nvcc -O3 -std=c++17 -shared -Xcompiler -fPIC,-fvisibility=hidden \
      -cudart static -lineinfo "${gencode[@]}" -DNEEDLE_CUDA_ARCHS="\"${NEEDLE_CUDA_ARCHS//;/,}\"" \
      $("$PY" -m pybind11 --includes) plugins/needle_cuda/src/ndarray_cuda.cu \
      -o "$WORK/_ext$suffix" &&
      export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}" &&
      install_by_hand ./plugins/needle_cuda "$WORK/_ext$suffix"
  } >"$LOGS/build_cuda.log" 2>&1
  result "build+install needle-cuda (nvcc directly: no cmake >= 3.24)" $?
fi
tail -5 "$LOGS/build_cuda.log"

"$PY" -c "
from needle.plugins import manager
r = manager.load_backend('cuda')
print('cuda backend:', r.status, r.reason or '', 'capabilities:', r.capabilities)
" 2>&1 | tee -a "$SUMMARY"

# ---------------------------------------------------------------------------------- tests
conformance=$("$PY" -c "import os, needle.testing.conformance as c; print(os.path.dirname(c.__file__))")
ignore=()
if ! has_module hypothesis; then
  for f in $(grep -l -E "^(from|import) hypothesis" tests/*.py 2>/dev/null); do
    ignore+=("--ignore=$f")
    note "hypothesis is not installed: leaving out $f"
  done
fi
timeout "${TEST_TIMEOUT:-240}" "$PY" -m pytest tests "$conformance" plugins/needle_cuda/tests \
  --backend cuda -q -rfEs "${ignore[@]}" --junitxml="$LOGS/junit.xml" 2>&1 | tee "$LOGS/tests.log"
result "test suite --backend cuda" "${PIPESTATUS[0]}"
grep -E "(passed|failed|error|skipped)" "$LOGS/tests.log" | tail -1 >>"$SUMMARY"
# DLPack with a real foreign producer and consumer: say whether it ran, not only that nothing failed
timeout "${TEST_TIMEOUT:-240}" "$PY" -m pytest plugins/needle_cuda/tests/test_dlpack.py -k torch \
  -q -rs >"$LOGS/dlpack_torch.log" 2>&1
rc=$?
counts=$(grep -E -o "[0-9]+ (passed|skipped|failed)" "$LOGS/dlpack_torch.log" | tr '\n' ' ')
result "DLPack with PyTorch (${counts% })" "$rc"

# ------------------------------------------------------------------------------ benchmark
timeout "${BENCH_TIMEOUT:-120}" "$PY" benchmarks/bench_gpu.py --json "$LOGS/bench_gpu.json" \
  2>&1 | tee "$LOGS/bench_gpu.log"
result "benchmarks/bench_gpu.py" "${PIPESTATUS[0]}"
grep -E "^(matmul|add|sum|transpose|all goals|below goal)" "$LOGS/bench_gpu.log" >>"$SUMMARY"

note "done in $((SECONDS - START))s; logs in $LOGS"
echo "===== summary"
cat "$SUMMARY"
rm -rf "$WORK"
exit "$FAILED"
