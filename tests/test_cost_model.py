"""The static cost model (benchmarks/cost_model.py) on CPU CI: the image kernels assembled for sm_90 have no
spills, no FMA contraction and no float64, and the uint8 -> float16/bfloat16 kernels are memory-bound on an H100
by the model's (stated, conservative) issue-rate assumptions, for NCHW and NHWC, Mixup and CutMix.

Needs an assembler (ptxas, or nvJitLink from numba-cuda[cu13]) and nvdisasm (shipped in the triton wheel that
torch installs); skipped, with the reason, only when they are absent.
"""

import pytest

from benchmarks import cost_model as cm

NVDISASM = cm.find_disassembler()
pytestmark = pytest.mark.skipif(NVDISASM is None or not cm.assembler_available(),
                                reason="needs ptxas or nvJitLink and nvdisasm (CUDA toolkit, numba-cuda[cu13], triton)")

B, SIZE = 256, 224


@pytest.mark.parametrize("out_name", ["f16", "bf16"])
@pytest.mark.parametrize("nchw", [True, False], ids=["NCHW", "NHWC"])
def test_uint8_to_half_kernels_are_memory_bound_without_spills(out_name, nchw):
    r = cm.report(out_name, nchw, B, SIZE, SIZE, NVDISASM, kinds=("mixup", "cutmix"))
    res = r.launched.resources
    assert res["spill_stores"] == res["spill_loads"] == res["stack"] == 0, res
    assert r.launched.ptx_fma == r.launched.sass_ffma == 0, "contraction changes the result"
    assert r.launched.float64 == 0
    for kind in ("mixup", "cutmix", "any"):
        assert r.issue_s(kind) <= r.floor_s, cm.table([r], B, SIZE, SIZE)


@pytest.mark.parametrize("name", sorted(cm._kernels().KERNELS))
def test_every_kernel_assembles_for_sm90_exactly_and_without_spills(name):
    a = cm.analyse_ptx(cm._kernels().compile_ptx(name, cm.CC), NVDISASM, path=False)
    assert a.resources["spill_stores"] == a.resources["spill_loads"] == 0, a.resources
    assert a.ptx_fma == a.sass_ffma == 0 and a.float64 == 0


def test_hardware_conversion_assembles_for_sm80():
    kcuda = cm._kernels()
    for name in ("mix_images_f16_nchw_vec4", "mix_images_bf16_nhwc_generic"):
        cubin, log, _ = cm.assemble(kcuda.compile_ptx(name, (8, 0)), "sm_80")
        assert cubin and cm.resources(log)["spill_stores"] == 0


def test_tools_are_found_in_the_python_environment(monkeypatch):
    """CI has no /usr/local/cuda necessarily: nvJitLink (numba-cuda[cu13]) assembles and triton's nvdisasm
    disassembles, with nothing on PATH."""
    python_dirs = [d for d in cm._tool_dirs() if "site-packages" in str(d)]
    monkeypatch.setattr(cm, "_tool_dirs", lambda: python_dirs)
    monkeypatch.setattr(cm.shutil, "which", lambda name: None)
    nvdisasm = cm.find_disassembler()
    assert nvdisasm is not None and "site-packages" in nvdisasm
    monkeypatch.setattr(cm, "_find", lambda name: [] if name == "ptxas" else [nvdisasm])
    ptx = cm._kernels().compile_ptx("mix_images_f16_nchw_vec4", cm.CC)
    cubin, log, assembler = cm.assemble(ptx)
    assert assembler == "nvJitLink" and cm.resources(log)["registers"] > 0
    instrs, labels = cm.disassemble(cubin, nvdisasm)
    assert any(i.op.startswith("F2FP") for i in instrs)  # the hardware float32 -> float16 conversion
    assert len(cm.longest_path(instrs, labels)) > 0


def test_longest_path_model():
    """The path model on a hand-written control-flow shape: a guarded exit, an if/else and a join."""
    text = [cm.Instr(0x00, "", "ISETP.GE.AND", "P0, PT, R0, R1, PT"), cm.Instr(0x10, "@P0", "EXIT", ""),
            cm.Instr(0x20, "@P1", "BRA", "`(.L_x_0)"), cm.Instr(0x30, "", "FADD", "R2, R2, R3"),
            cm.Instr(0x40, "", "FMUL", "R2, R2, R3"), cm.Instr(0x50, "", "BRA", "`(.L_x_1)"),
            cm.Instr(0x60, "", "LOP3.LUT", "R2, R2, R3"), cm.Instr(0x70, "", "STG.E", "[R4], R2"),
            cm.Instr(0x80, "", "EXIT", "")]
    path = cm.longest_path(text, {".L_x_0": 0x60, ".L_x_1": 0x70})
    assert [i.addr for i in path] == [0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x70, 0x80]
    cost = cm.path_cost(path)
    assert cost.pipes == {"alu": 1, "issue": 5, "fp32": 2} and cost.clocks == 8
    with pytest.raises(ValueError, match="loop"):
        cm.longest_path(text[:2] + [cm.Instr(0x20, "@P1", "BRA", "`(.L_x_0)")] + text[3:], {".L_x_0": 0x00,
                                                                                                ".L_x_1": 0x70})
