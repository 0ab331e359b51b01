"""`hmr-fast kernels-report --arch sm_90a|sm_80`: compile every Triton kernel variant ahead
of time (no GPU needed) and print one line per variant:

    NAME regs=N spills=N smem=BYTES mma=yes|no mma_op=wgmma|mma.sync|none

Every module in ``hmr_fast.kernels`` that exposes ``AOT_VARIANTS`` (a list of
dict(name, fn, signature, constexprs, num_warps, archs)) is compiled with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90 or 80, 32))``. Triton itself
turns capability 90 into ``sm_90a`` (the arch-specific variant with wgmma). Registers and
spills come from ``ptxas -v`` (Triton's bundled ptxas) on the generated PTX, shared memory
from the compiled metadata, mma from the PTX (mma_op: wgmma if any wgmma, else mma.sync).
A variant whose ``archs`` (compute capabilities 80 / 90, None = all) excludes the target is
not launched there and not listed. Exit status 1 if any variant fails to compile.

``--batches 1,37,64,4096`` also compiles each variant that has ``runtime_ints`` (the SMPL
kernels) as Triton specialises it at launch: pointers 16-byte aligned, integer arguments
divisible by 16 marked so, integers equal to 1 made constants, with the argument values of
a real launch at each batch size in full and keypoint mode. Identical specialisations are
compiled once; the line's name is ``VARIANT@B<batches>:<modes>``. ptxas results are cached
by the PTX's hash (``$HMR_FAST_AOT_CACHE``, default ``~/.cache/hmr-fast/aot``); Triton caches
the compilation itself.

Compiling needs real ``@triton.jit`` kernels, so when ``TRITON_INTERPRET=1`` is set (the
test suite sets it on a machine without CUDA) the report re-runs itself in a subprocess
without it.
"""

import argparse
import hashlib
import importlib
import json
import os
import pathlib
import pkgutil
import re
import subprocess
import sys
import tempfile
import traceback

ARCHS = {"sm_90a": 90, "sm_90": 90, "sm_80": 80}
_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _ptxas_path() -> str:
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        try:
            return get_ptxas().path
        except TypeError:  # newer Triton: get_ptxas(arch)
            return get_ptxas(90).path
    except Exception:  # pragma: no cover - older/newer layouts
        import triton

        return str(pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas")


def _gpu_name(capability: int) -> str:
    try:
        from triton.backends.nvidia.compiler import sm_arch_from_capability

        return sm_arch_from_capability(capability)
    except Exception:  # pragma: no cover
        return f"sm_{capability}" + ("a" if capability >= 90 else "")


def _cache_dir() -> pathlib.Path:
    default = pathlib.Path.home() / ".cache" / "hmr-fast" / "aot"
    return pathlib.Path(os.environ.get("HMR_FAST_AOT_CACHE", default))


def _ptxas_usage(ptx: str, capability: int) -> tuple[int, int]:
    """(registers, spill bytes (stores + loads)) from ptxas -v, cached by the PTX's hash."""
    key = hashlib.sha256(f"{capability}\n{_ptxas_path()}\n{ptx}".encode()).hexdigest()
    cached = _cache_dir() / f"{key}.json"
    try:
        regs, spills = json.loads(cached.read_text())
        return int(regs), int(spills)
    except (OSError, ValueError, TypeError):
        pass
    regs, spills = _run_ptxas(ptx, capability)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps([regs, spills]))
        tmp.replace(cached)
    except OSError:  # a read-only home: no cache, same result
        pass
    return regs, spills


def _run_ptxas(ptx: str, capability: int) -> tuple[int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / "k.ptx"
        src.write_text(ptx)
        proc = subprocess.run(
            [
                _ptxas_path(),
                "-v",
                "--gpu-name",
                _gpu_name(capability),
                str(src),
                "-o",
                str(pathlib.Path(tmp) / "k.cubin"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    log = proc.stdout + proc.stderr
    regs = max(int(m) for m in re.findall(r"Used (\d+) registers", log))
    spills = sum(
        int(a) + int(b)
        for a, b in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    )
    return regs, spills


def compile_variant(variant: dict, capability: int) -> dict:
    """Compile one AOT variant; returns dict(regs, spills, smem, mma)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    src = ASTSource(
        fn=variant["fn"],
        signature=variant["signature"],
        constexprs=variant.get("constexprs", {}),
        attrs=variant.get("attrs"),
    )
    compiled = triton.compile(
        src,
        target=GPUTarget("cuda", capability, 32),
        options={"num_warps": variant.get("num_warps", 4)},
    )
    ptx = compiled.asm["ptx"]
    regs, spills = _ptxas_usage(ptx, capability)
    if re.search(r"\bwgmma\.mma_async", ptx):
        mma_op = "wgmma"
    elif re.search(r"\bmma\.sync", ptx):
        mma_op = "mma.sync"
    else:
        mma_op = "none"
    return dict(
        regs=regs,
        spills=spills,
        smem=int(compiled.metadata.shared),
        mma=mma_op != "none",
        mma_op=mma_op,
    )


def launched_on(variant: dict, capability: int) -> bool:
    """Whether the launchers use this variant on a GPU of this capability (80 or 90)."""
    archs = variant.get("archs")
    return archs is None or capability in archs


def specialised(variant: dict, ints: dict) -> dict:
    """The variant as Triton compiles it at a launch with these integer arguments: every
    pointer 16-byte aligned (torch's allocations are), integers divisible by 16 marked,
    integers equal to 1 turned into constants."""
    names = variant["fn"].arg_names
    signature = dict(variant["signature"])
    constexprs = dict(variant.get("constexprs", {}))
    attrs = {}
    for name, kind in variant["signature"].items():
        if kind.startswith("*"):
            attrs[(names.index(name),)] = [["tt.divisibility", 16]]
        elif name in ints and ints[name] == 1:
            signature[name] = "constexpr"
            constexprs[name] = 1
        elif name in ints and ints[name] % 16 == 0:
            attrs[(names.index(name),)] = [["tt.divisibility", 16]]
    return dict(variant, signature=signature, constexprs=constexprs, attrs=attrs)


def specialisations(variant: dict, batches: list[int]) -> list[tuple[str, dict]]:
    """(name, specialised variant) for each distinct launch specialisation of the variant
    over `batches` in full and keypoint mode."""
    groups: dict = {}
    for keypoint_mode in (False, True):
        for batch in batches:
            spec = specialised(variant, variant["runtime_ints"](variant, batch, keypoint_mode))
            key = repr((sorted(spec["signature"].items()), sorted(spec["constexprs"].items()),
                        sorted(spec["attrs"])))
            entry = groups.setdefault(key, (spec, [], []))
            if batch not in entry[1]:
                entry[1].append(batch)
            mode = "kp" if keypoint_mode else "full"
            if mode not in entry[2]:
                entry[2].append(mode)
    return [(f"{variant['name']}@B{','.join(map(str, b))}:{','.join(m)}", spec)
            for spec, b, m in groups.values()]


def iter_variants():
    """(module name, variant) for every AOT variant in hmr_fast.kernels."""
    from hmr_fast.ops.kernels_loader import kernels_package

    pkg = kernels_package()
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        for variant in getattr(module, "AOT_VARIANTS", []):
            yield info.name, variant


def _rerun_without_interpreter(argv: list[str]) -> int:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(_REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    proc = subprocess.run([sys.executable, "-m", "hmr_fast.ops.compile_report", *argv], env=env)
    return proc.returncode


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="hmr-fast kernels-report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--arch", choices=sorted(ARCHS), default="sm_90a")
    parser.add_argument("--only", default=None, help="regex on variant names")
    parser.add_argument(
        "--batches",
        default=None,
        help="comma-separated batch sizes: also compile the launch-specialised signatures",
    )
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return _rerun_without_interpreter(argv)
    capability = ARCHS[args.arch]
    failures = 0
    try:
        variants = list(iter_variants())
    except Exception:
        traceback.print_exc()
        return 1
    jobs = []
    batches = [int(b) for b in args.batches.split(",")] if args.batches else []
    for module, variant in variants:
        name = variant.get("name", f"{module}.{getattr(variant.get('fn'), '__name__', '?')}")
        if not launched_on(variant, capability):
            continue
        jobs.append((name, variant))
        if batches and callable(variant.get("runtime_ints")):
            jobs += specialisations(variant, batches)
    for name, variant in jobs:
        if args.only and not re.search(args.only, name):
            continue
        try:
            r = compile_variant(variant, capability)
        except Exception as exc:  # report and keep going; exit status says it failed
            failures += 1
            print(
                f"{name} FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                file=sys.stderr,
                flush=True,
            )
            continue
        print(
            f"{name} regs={r['regs']} spills={r['spills']} smem={r['smem']} "
            f"mma={'yes' if r['mma'] else 'no'} mma_op={r['mma_op']}",
            flush=True,
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
