#!/usr/bin/env bash
# The one GPU check (issue 12): run from anywhere on a bare CUDA machine (torch 2.11,
# triton 3.6, no network, no editable install), within 8 minutes in all:
#
#     bash benchmarks/gpu_check.sh          # writes $OUT/gpu_report.md ($OUT: ./gpu_out)
#
# Stages, each with its own time cap; a stage's failure or timeout is recorded in the
# report and does not stop the next one:
#   env     GPU, driver/CUDA, torch/triton/python/smplx/nvtx versions, date
#   aot     `hmr-fast kernels-report` for sm_90a and sm_80 (in parallel) under the
#           machine's Triton: compile failures and register spills
#   pytest  `pytest -m gpu` over tests/test_gpu_*.py (parity, gradients, determinism,
#           B = 110000, inductor, 50 training steps fused vs unfused), after compiling the
#           kernels they launch from three processes (benchmarks/gpu_warm.py)
#   timing  benchmarks/gpu_report.py: card, parity gate, SMPL timing table, keypoint mode
#   train   benchmarks/gpu_report.py: discriminator table, HMR training-step breakdown
# Without CUDA every stage still runs its code path and says CUDA is absent (the compile
# report then builds one variant only), and the script exits 0.
#
# Environment: OUT (report folder), PYTHON (interpreter; default python3 if it has torch,
# else ./.venv/bin/python), GPU_CHECK_BUDGET_S (total, default 470 s), GPU_CHECK_STAGES
# (comma list, default all), GPU_CHECK_AOT_FULL=1 (full compile report even without CUDA),
# GPU_CHECK_AOT_BATCHES (e.g. 1,37,64,4096: also compile the launch-specialised
# signatures; slow). Wheels carried in ./.whl (smplx, nvtx; see shared/GPU.md) are installed
# into a temporary folder when smplx is not importable.
# Exit status: 0 if no stage failed or timed out (skips are not failures), else 1.

set -u -o pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
OUT="${OUT:-$ROOT/gpu_out}"
mkdir -p "$OUT"
REPORT="$OUT/gpu_report.md"
LOG="$OUT/gpu_check.log"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
TOTAL_S="${GPU_CHECK_BUDGET_S:-470}"
STAGES=",${GPU_CHECK_STAGES:-env,aot,pytest,timing,train},"
START=$(date +%s)
: > "$LOG"
: > "$WORK/body.md"
: > "$WORK/stages.md"
FAILED=0

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# A GPU run must compile the kernels, never interpret them.
unset TRITON_INTERPRET

elapsed() { echo $(( $(date +%s) - START )); }

if [ -n "${PYTHON:-}" ]; then
    PY="$PYTHON"
elif python3 -c "import torch" >/dev/null 2>&1; then
    PY=python3
elif [ -x "$ROOT/.venv/bin/python" ]; then
    PY="$ROOT/.venv/bin/python"
else
    PY=python3
fi

SETUP_NOTES=""
if ! "$PY" -c "import smplx" >/dev/null 2>&1 && ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
    # Carried wheels (shared/GPU.md), for a caller that did not install them itself.
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" \
            "$ROOT"/.whl/*.whl >>"$LOG" 2>&1; then
        export PYTHONPATH="$WORK/site:$PYTHONPATH"
        SETUP_NOTES="installed the carried wheels (.whl/) into a temporary folder"
    else
        SETUP_NOTES="installing the carried wheels (.whl/) FAILED (see gpu_check.log)"
    fi
fi
HAS_CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)

write_report() {
    {
        echo "# hmr-fast GPU check"
        echo
        echo "\`bash benchmarks/gpu_check.sh\`, $(date -u '+%Y-%m-%d %H:%M UTC'), $(elapsed) s" \
             "so far of a ${TOTAL_S} s budget; python: \`$PY\`; CUDA available: $HAS_CUDA."
        [ -n "$SETUP_NOTES" ] && echo "Setup: $SETUP_NOTES."
        echo
        echo "| stage | status | seconds |"
        echo "|---|---|---|"
        cat "$WORK/stages.md"
        echo
        cat "$WORK/body.md"
    } > "$REPORT"
}

# run_stage ID TITLE CAP_S RESERVE_S FORMATTER CMD...: run CMD under `timeout`, at most
# CAP_S seconds and never into the RESERVE_S seconds kept for later stages; then append the
# FORMATTER's markdown of its log to the report.
run_stage() {
    local id=$1 title=$2 cap=$3 reserve=$4 formatter=$5
    shift 5
    if [[ "$STAGES" != *",$id,"* ]]; then
        return
    fi
    local left=$(( TOTAL_S - $(elapsed) - reserve ))
    if (( left < 15 )); then
        echo "| $id: $title | skipped: time budget spent | 0 |" >> "$WORK/stages.md"
        printf '## %s\n\nskipped: time budget spent\n\n' "$title" >> "$WORK/body.md"
        write_report
        return
    fi
    (( cap > left )) && cap=$left
    STAGE_CAP=$cap
    local t0 rc status
    t0=$(date +%s)
    echo "=== stage $id: $title (cap ${cap}s) ===" >> "$LOG"
    export STAGE_CAP
    # `timeout` runs a program, not a shell function: a child bash runs the exported
    # function, and timeout ends its whole process group (the parallel compiles too).
    timeout -k 15 "$cap" bash -c '"$@"' _ "$@" > "$WORK/$id.log" 2>&1
    rc=$?
    STAGE_RC=$rc
    cat "$WORK/$id.log" >> "$LOG"
    if (( rc == 0 )); then
        status="ok"
        if [ "$HAS_CUDA" != 1 ] && [[ ",pytest,timing,train," == *",$id,"* ]]; then
            status="ok (no CUDA: nothing measured)"
        fi
    elif (( rc == 124 || rc == 137 )); then
        status="TIMED OUT after ${cap} s"
        FAILED=1
    else
        status="FAILED (exit $rc)"
        FAILED=1
    fi
    echo "| $id: $title | $status | $(( $(date +%s) - t0 )) |" >> "$WORK/stages.md"
    {
        echo "## $title"
        echo
        echo "Status: $status."
        echo
        "$formatter" "$id"
        echo
    } >> "$WORK/body.md"
    write_report
}

# ---- formatters: markdown of a stage's output on stdout

fmt_file() {  # the stage wrote markdown to $WORK/ID.md; fall back to its log
    if [ -s "$WORK/$1.md" ]; then
        cat "$WORK/$1.md"
    else
        echo '```'
        tail -n 60 "$WORK/$1.log"
        echo '```'
    fi
    # The stage's own log too when it broke or was cut short: finished rows are printed
    # there as they are measured, before the section's table is written.
    if grep -q "Traceback" "$WORK/$1.log" || [ "$STAGE_RC" != 0 ]; then
        echo
        echo "<details><summary>stage log (last 80 lines)</summary>"
        echo
        echo '```'
        tail -n 80 "$WORK/$1.log"
        echo '```'
        echo "</details>"
    fi
}

fmt_aot() {
    local arch f
    for arch in sm_90a sm_80; do
        f="$WORK/aot_$arch.log"
        [ -f "$f" ] || continue
        echo "### $arch: $(grep -c ' regs=' "$f") variants compiled, $(grep -c 'FAILED' "$f") failed"
        echo
        echo "Variants with spills or failures:"
        echo
        echo '```'
        grep -E 'FAILED|spills=[1-9]|Error|error' "$f" | head -n 40 || true
        echo '```'
        echo
        echo "<details><summary>full $arch listing</summary>"
        echo
        echo '```'
        cat "$f"
        echo '```'
        echo "</details>"
        echo
    done
}

fmt_pytest() {
    local f="$WORK/$1.log"
    echo "Summary: \`$(grep -E '(passed|failed|skipped|error|no tests ran)' "$f" | tail -n 1)\`"
    echo
    if grep -qE '^(FAILED|ERROR) ' "$f"; then
        echo "Failures:"
        echo
        echo '```'
        grep -E '^(FAILED|ERROR) ' "$f" | head -n 40
        echo '```'
        echo
    fi
    echo "<details><summary>pytest output (last 150 lines)</summary>"
    echo
    echo '```'
    tail -n 150 "$f"
    echo '```'
    echo "</details>"
}

# ---- stages

aot_both() {
    local only=() batches=()
    if [ "$HAS_CUDA" != 1 ] && [ "${GPU_CHECK_AOT_FULL:-0}" != 1 ]; then
        # No GPU here: compile one variant, to check the stage itself in seconds.
        only=(--only '^smpl_readout_fwd_fp32$')
        echo "no CUDA: one variant only (GPU_CHECK_AOT_FULL=1 compiles all)"
    fi
    if [ -n "${GPU_CHECK_AOT_BATCHES:-}" ]; then
        batches=(--batches "$GPU_CHECK_AOT_BATCHES")
    fi
    "$PY" -m hmr_fast.cli kernels-report --arch sm_90a "${only[@]}" "${batches[@]}" \
        > "$WORK/aot_sm_90a.log" 2>&1 &
    local p90=$!
    "$PY" -m hmr_fast.cli kernels-report --arch sm_80 "${only[@]}" "${batches[@]}" \
        > "$WORK/aot_sm_80.log" 2>&1 &
    local p80=$!
    local rc=0
    wait "$p90" || rc=1
    wait "$p80" || rc=1
    "$PY" -c "import triton; print('triton', triton.__version__)"
    return $rc
}

pytest_gpu() {
    # Only the GPU test files: collecting the whole suite would import optional packages
    # (onnxruntime, smplx, ...) that a bare machine may lack, and a collection error stops
    # pytest before any test runs. Parity first, so that a timeout cuts the least important.
    local files=() f
    for f in test_gpu_smpl.py test_gpu_train.py test_gpu_compile.py; do
        [ -f "$ROOT/tests/$f" ] && files+=("$ROOT/tests/$f")
    done
    for f in "$ROOT"/tests/test_gpu_*.py; do
        [[ " ${files[*]} " == *" $f "* ]] || files+=("$f")
    done
    if [ "$HAS_CUDA" = 1 ]; then
        # Triton compiles each kernel variant on first launch, serially: fill its disk
        # cache from three processes at once first (benchmarks/gpu_warm.py).
        local t0=$SECONDS
        "$PY" "$ROOT/benchmarks/gpu_warm.py" || echo "gpu_warm.py failed: the tests compile"
        echo "kernel warm-up: $(( SECONDS - t0 )) s"
    fi
    # -v: each test's result is in the log as it finishes, even if the stage times out.
    "$PY" -m pytest -m gpu -v -rfEs --durations=15 -p no:cacheprovider "${files[@]}"
}

report_stage() {  # ID SECTIONS: gpu_report.py into $WORK/ID.md, ending before the cap
    local id=$1 sections=$2
    "$PY" "$ROOT/benchmarks/gpu_report.py" --sections "$sections" \
        --budget-s $(( STAGE_CAP > 40 ? STAGE_CAP - 25 : 15 )) --out "$WORK/$id.md"
}

export PY ROOT WORK HAS_CUDA
export -f aot_both pytest_gpu report_stage

run_stage env "Environment" 60 400 fmt_file report_stage env env
run_stage aot "AOT compile report (hmr-fast kernels-report, sm_90a and sm_80)" 120 330 \
    fmt_aot aot_both
run_stage pytest "pytest -m gpu" 240 150 fmt_pytest pytest_gpu
run_stage timing "SMPL parity gate and timings (benchmarks/gpu_report.py)" 210 60 \
    fmt_file report_stage timing card,parity,smpl,keypoints
run_stage train "Discriminator and HMR training step (benchmarks/gpu_report.py)" 120 0 \
    fmt_file report_stage train disc,train

write_report
rm -rf "$WORK"
echo "gpu_check: report in $REPORT ($(elapsed) s)"
exit $FAILED
