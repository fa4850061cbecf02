#!/bin/bash
# GPU check of il2pkpd fitting (issue 5), run on a machine with one NVIDIA GPU whose Python has
# jax with CUDA, numpyro, diffrax, equinox, optax, pandas, matplotlib, typer and h5py but not
# the rest of il2pkpd's dependencies, and no network. Prepared here (in the repository root):
#
#   printf '/.whl/\n/.gpudata/\n' >> .git/info/exclude; mkdir -p .whl .gpudata
#   cp ../shared/benchmarks/{iv_2cmt_single_dose,friberg_multiple_dose,friberg_true_params}.csv \
#      .gpudata/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl arviz==1.3.0 arviz-base==1.3.1 arviz-plots==1.3.2 arviz-stats==1.3.3 \
#       h5netcdf==1.8.2 xarray-einstats==0.11.0 numpyro==0.22.0 xarray==2026.9.0 \
#       pint==0.26.2 flexcache==0.3 flexparser==0.4 platformdirs==4.14.8
#
# then run there with .whl and .gpudata carried: bash benchmarks/gpu_check.sh (writes to $OUT).
# It runs bench_fit_iv2cmt.py with the chains vectorized on the GPU and, side by side, with
# parallel chains on the machine's CPU cores; the CLI fit end to end on the GPU (4 chains,
# vectorized automatically); and the Friberg benchmark's gradient timing on the GPU.
# Measured on one H200 (2026-11-30), README "Status and measured numbers", by two device
# calls with these steps (the CLI fit there ran 100 + 100 in a second call; the Friberg
# step had 150 s); this merged script itself has not been run as one call.
set -u
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 MPLBACKEND=Agg
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
  python3 -c "import jax, numpyro, arviz; print('jax', jax.__version__, jax.devices(), \
'numpyro', numpyro.__version__, 'arviz', arviz.__version__)"; } 2>&1 | tee "$OUT/env.txt"
t() { echo "== $1 $(date +%T)"; }
t iv_gpu
timeout 190 python3 benchmarks/bench_fit_iv2cmt.py --no-stan --data-dir .gpudata \
    --chain-method vectorized --out "$OUT/iv_gpu.json" > "$OUT/iv_gpu.log" 2>&1
echo "rc $?"; tail -4 "$OUT/iv_gpu.log"
t iv_cpu
JAX_PLATFORMS=cpu timeout 120 python3 benchmarks/bench_fit_iv2cmt.py --no-stan \
    --data-dir .gpudata --out "$OUT/iv_cpu.json" > "$OUT/iv_cpu.log" 2>&1
echo "rc $?"; tail -4 "$OUT/iv_cpu.log"
t cli_gpu
timeout 170 python3 -m il2pkpd fit .gpudata/iv_2cmt_single_dose.csv --model two_cmt_iv \
    --out /tmp/clifit --warmup 100 --samples 100 --residual CP=lognormal --iiv CL,V1,Q,V2 \
    --covariance block --parametrization centred=CL,V1,V2 --seed 1 --prior-draws 50 \
    --pred-draws 50 > "$OUT/cli_gpu.log" 2>&1
echo "rc $?"; ls -la /tmp/clifit; cp /tmp/clifit/fit.json /tmp/clifit/summary.csv "$OUT/"
t fr_gpu
timeout 110 python3 benchmarks/bench_fit_friberg.py --data-dir .gpudata --chains 4 \
    --chain-method vectorized --warmup 60 --samples 40 --out "$OUT/fr_gpu.json" \
    > "$OUT/fr_gpu.log" 2>&1
echo "rc $?"; grep "gradient" "$OUT/fr_gpu.log"
t end
