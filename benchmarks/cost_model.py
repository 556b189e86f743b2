"""Static cost model of the fused image kernel on sm_90 (H100): an estimate read off the machine code, no GPU.

For each image kernel: NVVM's PTX (``numba.cuda.compile_ptx``) -> an sm_90 cubin (``ptxas -arch=sm_90 -v``, or
nvJitLink, the same assembler as a library, which numba-cuda[cu13] installs) -> SASS (``nvdisasm``, which the
triton wheel that torch installs ships). Read from them:

- registers, spill stores/loads and stack of the kernels as launched (the assembler's ``-v`` report);
- exactness: no ``fma.rn.f32`` in the PTX and no ``FFMA`` in the SASS (a contracted ``a*b + c`` rounds once, the
  oracle rounds twice), no float64 (``.f64`` in the PTX, ``D*`` instructions in the SASS);
- SASS instructions per output pixel on the hot path of each (dtype x layout x sample kind): the longest path
  through the kernel compiled for one sample kind (``python_kernel(..., only_kind=...)``; the launched kernel
  reads the kind per sample and branches once per thread), divided by the 4 pixels a thread writes; "any" is
  the longest path through the launched kernel itself, an upper bound for every kind. The kernels have no
  loop, so every instruction on a path is counted once (the bad-partner and tail branches when longer).

Issue model (assumptions, per SM sub-partition (SMSP); an H100 SXM has 132 SMs x 4 SMSPs):

- one warp instruction issued per clock per SMSP;
- pipes, in clocks of one SMSP per warp instruction (from the CUDA Programming Guide's throughput table for
  compute capability 9.0, results per clock per SM / 4 SMSPs / 32 lanes): FP32 add/mul/fma 1 (128/SM);
  integer add/logic/shift/compare/select/permute (ALU) 2 (64/SM); integer multiply-add (IMAD*, the FMA-heavy
  half of the FP32 pipe) 2; type conversions and special functions (I2F, F2I, F2F, F2FP, MUFU, ...) 8
  (16/SM) -- pessimistic for F2FP and I2FP; uniform-datapath, memory and control instructions issue only;
- a warp's time is the largest of its issue clocks and each pipe's clocks; every warp of the grid runs the
  hot path (partial warps included); the clock is H100 SXM's base clock, 1.59 GHz (boost is 1.98 GHz);
- memory floor: every input byte read once and every output byte written once, at 3.0 TB/s (the
  device-to-device copy measured on this workplace's H100, counting bytes read and written); Mixup also reads
  each partner pixel, reported as the second floor.

What it cannot see: latency and occupancy (bytes in flight), cache behaviour, clocks under load. A GPU run
(``benchmarks/test_bench_kernels.py``, group mix-gpu, against a device-to-device copy) confirms or refutes it.

    python benchmarks/cost_model.py [--batch 256] [--size 224] [--markdown FILE]
    python benchmarks/cost_model.py --ptx FILE [--pixels-per-thread 1] [--no-path]   # any kernel's PTX
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional

SMS = 132
SMSPS = 4
CLOCK_HZ = 1.59e9
BANDWIDTH = 3.0e12
ARCH = "sm_90"
CC = (9, 0)

_PIPE_CLOCKS = {"fp32": 1, "alu": 2, "imad": 2, "xu": 8}
_FP32 = ("FADD", "FMUL", "FFMA", "FADD32I", "FMUL32I", "FFMA32I", "HADD2", "HMUL2", "HFMA2", "FSWZADD")
_IMAD = ("IMAD", "IMUL", "IMAD32I", "IMUL32I", "IDP", "IDP4A")
_XU = ("I2F", "F2I", "F2F", "F2FP", "I2FP", "FRND", "MUFU", "POPC", "FLO", "BREV", "I2I")
_ALU = ("IADD3", "IADD", "IADD32I", "LOP3", "LOP", "LOP32I", "SHF", "SHL", "SHR", "PRMT", "ISETP", "FSETP", "SEL",
        "FSEL", "LEA", "MOV", "MOV32I", "IMNMX", "FMNMX", "VIMNMX", "PLOP3", "P2R", "R2P", "BMSK", "SGXT", "IABS",
        "VIADD", "VIADDMNMX", "FCHK", "HSETP2", "CSET", "CSETP", "ICMP", "FCMP", "BFE", "BFI")
_FLOAT64 = ("DADD", "DMUL", "DFMA", "DSETP", "DMNMX", "F2F.F64", "F2F.F32.F64", "I2F.F64", "F2I.F64")


class Instr(NamedTuple):
    addr: int
    pred: str  # "" or e.g. "@P0", "@!PT"
    op: str  # opcode with modifiers, e.g. "FADD.FTZ"
    args: str


def pipe(op: str) -> str:
    """The pipe an instruction occupies (see the module's issue model); "issue" = issue slot only."""
    base = op.split(".")[0]
    if op.startswith("F2FP") or base in _XU:
        return "xu"
    if base in _FP32:
        return "fp32"
    if base in _IMAD:
        return "imad"
    if base in _ALU:
        return "alu"
    return "issue"  # uniform datapath (U*, S2UR), memory, control, S2R, NOP, ...


# --- tools ------------------------------------------------------------------------------------------------------


def _tool_dirs() -> List[Path]:
    """Where the CUDA command-line tools may be: $CUDA_HOME/bin, /usr/local/cuda/bin, the pip CUDA wheels'
    nvidia/cu*/bin and triton's bundled backends/nvidia/bin (torch installs triton)."""
    dirs = [Path(os.environ[v]) / "bin" for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    dirs.append(Path("/usr/local/cuda/bin"))
    for pkg, sub in (("nvidia", "cu13/bin"), ("nvidia", "cu12/bin"), ("triton", "backends/nvidia/bin")):
        spec = importlib.util.find_spec(pkg)
        for loc in (spec.submodule_search_locations or []) if spec else []:
            dirs.append(Path(loc) / sub)
    return dirs


def _find(name: str) -> List[str]:
    found = [shutil.which(name)] + [str(d / name) for d in _tool_dirs() if (d / name).is_file()]
    return list(dict.fromkeys(p for p in found if p))


def find_disassembler() -> Optional[str]:
    """Path of ``nvdisasm`` (PATH, CUDA_HOME, pip CUDA wheels, triton's bundled copy), or None."""
    found = _find("nvdisasm")
    return found[0] if found else None


def _nvjitlink(ptx: bytes, arch: str):
    from cuda.bindings import nvjitlink

    handle = nvjitlink.create(2, [f"-arch={arch}", "-verbose"])
    try:
        nvjitlink.add_data(handle, nvjitlink.InputType.PTX, ptx, len(ptx), "kernel.ptx")
        nvjitlink.complete(handle)
        cubin = bytearray(nvjitlink.get_linked_cubin_size(handle))
        nvjitlink.get_linked_cubin(handle, cubin)
        log = bytearray(nvjitlink.get_info_log_size(handle))
        nvjitlink.get_info_log(handle, log)
    finally:
        nvjitlink.destroy(handle)
    return bytes(cubin), log.decode(errors="replace")


def assemble(ptx: str, arch: str = ARCH):
    """PTX -> (cubin bytes, the assembler's verbose report, which assembler). Tries every ``ptxas`` found (one
    older than the PTX refuses it) and then nvJitLink; raises RuntimeError when none can."""
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "k.ptx", Path(tmp) / "k.cubin"
        src.write_text(ptx)
        for ptxas in _find("ptxas"):
            proc = subprocess.run([ptxas, f"-arch={arch}", "-v", str(src), "-o", str(out)], capture_output=True,
                                  text=True)
            if proc.returncode == 0:
                return out.read_bytes(), proc.stdout + proc.stderr, ptxas
            errors.append(f"{ptxas}: {proc.stderr.strip()[:200]}")
    try:
        cubin, log = _nvjitlink(ptx.encode(), arch)
        return cubin, log, "nvJitLink"
    except Exception as exc:  # ImportError, or the library refusing the PTX
        errors.append(f"nvJitLink: {exc}")
    raise RuntimeError("no assembler could build the PTX: " + "; ".join(errors))


def assembler_available() -> bool:
    """True when some ``ptxas`` or nvJitLink is installed (whether it accepts a given PTX is ``assemble``'s)."""
    return bool(_find("ptxas")) or importlib.util.find_spec("cuda.bindings.nvjitlink") is not None


def resources(log: str) -> Dict[str, int]:
    """registers, spill_stores, spill_loads (bytes) and stack (bytes) from a ptxas/nvJitLink verbose report."""
    regs = re.findall(r"[Uu]sed (\d+) registers", log)
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    stack = re.findall(r"(\d+) bytes stack frame", log) or re.findall(r"(\d+) stack", log)
    if not regs:
        raise ValueError(f"no register count in the assembler's report: {log[-500:]}")
    return {"registers": int(regs[-1]), "spill_stores": sum(int(s) for s, _ in spills),
            "spill_loads": sum(int(lo) for _, lo in spills), "stack": max((int(s) for s in stack), default=0)}


_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:(@!?U?P[T0-9]+)\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_TARGET = re.compile(r"`\((\.L_x_\d+)\)")


def disassemble(cubin: bytes, nvdisasm: str):
    """SASS of a one-kernel cubin -> (instructions, {label: address})."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([nvdisasm, "-c", f.name], capture_output=True, text=True, check=True).stdout
    instrs, labels, pending = [], {}, []
    for line in text.splitlines():
        m = _LABEL.match(line)
        if m:
            pending.append(m.group(1))
            continue
        m = _LINE.search(line)
        if m:
            addr = int(m.group(1), 16)
            for name in pending:
                labels[name] = addr
            pending = []
            instrs.append(Instr(addr, m.group(2) or "", m.group(3), m.group(4).strip()))
    return instrs, labels


# --- the longest path ---------------------------------------------------------------------------------------


def _blocks(instrs: List[Instr], labels: Dict[str, int]):
    """Basic blocks (lists of instructions, by start address) and their successors."""
    starts = {instrs[0].addr} | set(labels.values())
    for i, ins in enumerate(instrs[:-1]):
        if ins.op.split(".")[0] in ("BRA", "EXIT", "RET", "BRX", "JMP", "BPT"):
            starts.add(instrs[i + 1].addr)
    blocks, current = {}, None
    for ins in instrs:
        if ins.addr in starts:
            current = ins.addr
            blocks[current] = []
        blocks[current].append(ins)
    order = sorted(blocks)
    succ = {}
    for k, start in enumerate(order):
        last = blocks[start][-1]
        base = last.op.split(".")[0]
        nxt = [order[k + 1]] if k + 1 < len(order) else []
        never = last.pred in ("@!PT",)
        always = last.pred in ("", "@PT")
        if base in ("CALL", "BRX", "JMP", "RET"):
            raise ValueError(f"{last.op} at {last.addr:#x}: calls and indirect branches are not modelled")
        if base == "BRA" and not never:
            target = _TARGET.search(last.args)
            targets = [labels[target.group(1)]] if target else []
            succ[start] = targets if always else targets + nxt
        elif base in ("EXIT", "BPT") and not never:
            succ[start] = [] if always else nxt
        else:
            succ[start] = nxt
    return blocks, succ


def longest_path(instrs: List[Instr], labels: Dict[str, int]) -> List[Instr]:
    """The instructions on the longest (most instructions) path from the entry to an exit; raises ValueError if
    the reachable code has a loop (the model counts each instruction once)."""
    blocks, succ = _blocks(instrs, labels)
    entry = instrs[0].addr
    best: Dict[int, tuple] = {}
    state: Dict[int, int] = {}

    def visit(node):  # depth-first, memoised; blocks are few (tens)
        if state.get(node) == 1:
            raise ValueError(f"the kernel has a loop through {node:#x}: the path model needs loop-free code")
        if node in best:
            return best[node]
        state[node] = 1
        tails = [visit(s) for s in succ[node]]
        tail = max(tails, key=lambda t: t[0], default=(0, []))
        state[node] = 2
        best[node] = (len(blocks[node]) + tail[0], [node] + tail[1])
        return best[node]

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    return [ins for node in visit(entry)[1] for ins in blocks[node]]


# --- the estimate -------------------------------------------------------------------------------------------


@dataclass
class PathCost:
    instructions: int
    pipes: Dict[str, int]  # instructions per pipe on the path

    @property
    def clocks(self) -> float:
        """Clocks of one SMSP for one warp running the path: the issue slots or the busiest pipe."""
        return max([self.instructions] + [n * _PIPE_CLOCKS[p] for p, n in self.pipes.items() if p in _PIPE_CLOCKS])


def path_cost(path: List[Instr]) -> PathCost:
    pipes: Dict[str, int] = {}
    for ins in path:
        if ins.pred == "@!PT":
            continue
        p = pipe(ins.op)
        pipes[p] = pipes.get(p, 0) + 1
    return PathCost(sum(pipes.values()), pipes)


@dataclass
class Analysis:
    """One kernel's resources and exactness, and the hot path of one sample kind per thread."""

    resources: Dict[str, int]
    ptx_fma: int  # fma.rn.f32 in the PTX
    sass_ffma: int  # FFMA in the SASS
    float64: int  # .f64 in the PTX + float64 SASS instructions
    path: Optional[PathCost]  # None when not asked for (kernels with calls, e.g. a 64-bit division)
    assembler: str


def analyse_ptx(ptx: str, nvdisasm: str, arch: str = ARCH, path: bool = True) -> Analysis:
    """Resources, exactness and (``path``) the longest path of the one kernel in ``ptx``."""
    cubin, log, assembler = assemble(ptx, arch)
    instrs, labels = disassemble(cubin, nvdisasm)
    ops = [i.op for i in instrs]
    float64 = ptx.count(".f64") + sum(1 for op in ops if any(op.startswith(f) for f in _FLOAT64))
    return Analysis(resources(log), len(re.findall(r"\bfma\.rn\.f32\b", ptx)),
                    sum(1 for op in ops if op.split(".")[0] == "FFMA"), float64,
                    path_cost(longest_path(instrs, labels)) if path else None, assembler)


def floors(n: int, h: int, w: int, out_bytes: int):
    """(floor, floor with the partner read) in seconds: input read once (+ the partner's pixels) and output
    written once, at BANDWIDTH."""
    pixels = n * h * w
    base = pixels * 3 * (1 + out_bytes)
    return base / BANDWIDTH, (base + pixels * 3) / BANDWIDTH


def issue_time(path: PathCost, warps: int) -> float:
    """Seconds to issue ``warps`` warps of the path over all SMSPs at CLOCK_HZ."""
    return warps / (SMS * SMSPS) * path.clocks / CLOCK_HZ


KINDS = {"mixup": 1, "cutmix": 2, "copy": 0}  # pixel_math.KIND_*; "any": the launched kernel, every kind
OUT_BYTES = {"f32": 4, "f16": 2, "bf16": 2}


def _kernels():
    from dali_mixup import kernels
    return kernels.load("cuda")


@dataclass
class Report:
    """One image kernel for one batch shape: resources and exactness of the launched kernel, and per sample
    kind (and "any": the launched kernel's longest path, an upper bound for every kind) the SASS instructions
    per output pixel and the issue time."""

    kernel: str
    launched: Analysis
    paths: Dict[str, PathCost]
    pixels_per_thread: int
    warps: int
    floor_s: float
    floor_partner_s: float

    def per_pixel(self, kind: str) -> float:
        return self.paths[kind].instructions / self.pixels_per_thread

    def issue_s(self, kind: str) -> float:
        return issue_time(self.paths[kind], self.warps)

    def roofline(self, kind: str) -> float:
        """Estimated fraction of the memory roofline: floor / max(issue time, floor)."""
        return self.floor_s / max(self.issue_s(kind), self.floor_s)


def image_kernel_name(out_name: str, nchw: bool, vec: bool = True) -> str:
    return f"mix_images_{out_name}_{'nchw' if nchw else 'nhwc'}_{'vec4' if vec else 'generic'}"


def report(out_name: str, nchw: bool, n: int, h: int, w: int, nvdisasm: str, kinds=tuple(KINDS),
           vec: bool = True) -> Report:
    """Analyse the image kernel of dtype ``out_name`` (f32/f16/bf16), layout and access (vec4/generic) for a
    (n, h, w) uint8 batch: the launched kernel, and the kernel compiled for each of ``kinds``."""
    kcuda = _kernels()
    name = image_kernel_name(out_name, nchw, vec)
    launched = analyse_ptx(kcuda.compile_ptx(name, CC), nvdisasm)
    paths = {"any": launched.path}
    for kind in kinds:
        paths[kind] = analyse_ptx(kcuda.compile_ptx(name, CC, only_kind=KINDS[kind]), nvdisasm).path
    geo = kcuda.launch_geometry(n, h, w, vec)
    warps = geo.blocks * (-(-geo.threads // 32))
    return Report(name, launched, paths, kcuda.VEC, warps, *floors(n, h, w, OUT_BYTES[out_name]))  # 4 px a thread


def table(reports: List[Report], n: int, h: int, w: int) -> str:
    """Markdown: one row per kernel and sample kind."""
    lines = [f"Static estimate, {ARCH} (H100 SXM: {SMS} SMs x {SMSPS} SMSPs, {CLOCK_HZ / 1e9:.2f} GHz, "
             f"{BANDWIDTH / 1e12:.1f} TB/s), B = {n}, {h}x{w} uint8 in; not a measurement.", "",
             "| kernel | samples | registers | spills (B) | SASS / pixel | issue (us) | memory floor (us) | "
             "floor + partner (us) | issue / floor | est. roofline |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in reports:
        res = r.launched.resources
        spills = res["spill_stores"] + res["spill_loads"]
        for kind in r.paths:
            label = "any (launched)" if kind == "any" else kind
            issue = r.issue_s(kind)
            lines.append(f"| {r.kernel} | {label} | {res['registers']} | {spills} | {r.per_pixel(kind):.1f} | "
                         f"{issue * 1e6:.1f} | {r.floor_s * 1e6:.1f} | {r.floor_partner_s * 1e6:.1f} | "
                         f"{issue / r.floor_s:.2f} | {r.roofline(kind):.0%} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--markdown", default=None, help="also write the table to this file")
    ap.add_argument("--ptx", default=None, help="analyse this PTX file instead of the project's kernels")
    ap.add_argument("--pixels-per-thread", type=int, default=1, help="with --ptx: output pixels per thread")
    ap.add_argument("--no-path", action="store_true", help="with --ptx: resources and exactness only")
    args = ap.parse_args(argv)
    nvdisasm = find_disassembler()
    if nvdisasm is None or not assembler_available():
        sys.exit("needs ptxas or nvJitLink, and nvdisasm (pip install torch brings triton, which ships nvdisasm)")
    n, size = args.batch, args.size
    if args.ptx:
        a = analyse_ptx(Path(args.ptx).read_text(), nvdisasm, path=not args.no_path)
        warps = -(-n * size * size // args.pixels_per_thread // 32)
        if a.path is None:
            print(f"{args.ptx}: {a.resources}, fma.rn.f32 {a.ptx_fma}, FFMA {a.sass_ffma}, float64 {a.float64}")
            return
        print(f"{args.ptx}: {a.resources}, fma.rn.f32 {a.ptx_fma}, FFMA {a.sass_ffma}, float64 {a.float64}, "
              f"longest path {a.path.instructions} instructions {a.path.pipes} = "
              f"{a.path.instructions / args.pixels_per_thread:.1f} per pixel, {a.path.clocks} clocks per warp, "
              f"issue {issue_time(a.path, warps) * 1e6:.1f} us for B={n}, {size}x{size} ({a.assembler})")
        return
    reports = [report(out_name, nchw, n, size, size, nvdisasm) for out_name in ("f16", "bf16", "f32")
               for nchw in (True, False)]
    reports += [report(out_name, nchw, n, size, size, nvdisasm, kinds=(), vec=False)
                for out_name in ("f16", "bf16", "f32") for nchw in (True, False)]
    text = table(reports, n, size, size)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
