"""benchmarks/onednn_log.py reads oneDNN's verbose log as torch 2.13 (oneDNN 3.12) and TensorFlow 2.21 (oneDNN
3.7) print it: the lines below were captured from benchmarks/bench_primitives.py's children (the base model,
batch 256, on an Intel Xeon with AMX). Only the pure reading is tested here; no timing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

# loaded from its file, so that the benchmarks folder (which holds a datasets.py) never goes on sys.path
_SPEC = importlib.util.spec_from_file_location("onednn_log", Path(__file__).resolve().parents[2] / "benchmarks" /
                                               "onednn_log.py")
onednn_log = importlib.util.module_from_spec(_SPEC)
sys.modules["onednn_log"] = onednn_log  # dataclasses look their module up by name
_SPEC.loader.exec_module(onednn_log)

V = "onednn_verbose,v1,primitive,"
TORCH_DECONV_BF16 = (
    V + "exec,cpu,deconvolution,brg_deconv:avx10_1_512_amx+brgconv_strided:avx10_1_512_amx,forward_training,"
    "src:bf16::blocked:acdb::f0 wei:bf16:a:blocked:AcdB16b64a2b::f0 bia:bf16:a:blocked:a::f0 "
    "dst:bf16::blocked:acdb::f0,attr-scratchpad:user,alg:deconvolution_direct,"
    "mb256_ic128oc64_ih7oh14kh3sh2dh0ph1_iw7ow14kw3sw2dw0pw1,11.783")
TORCH_REORDER_BF16 = (V + "exec,cpu,reorder,jit:uni,undef,src:bf16:p:blocked:ABcd16b16a2b::f0 "
                      "dst:bf16::blocked:abcd::f0,attr-scratchpad:user,,1x32x3x3,6.62012")
TORCH_MATMUL_SUM = (V + "exec,cpu,matmul,brg_matmul:avx10_1_512_amx,undef,src:bf16::blocked:ab::f0 "
                    "wei:bf16::blocked:ba::f0 dst:bf16::blocked:ab::f0,attr-scratchpad:user attr-post-ops:sum,,"
                    "256x6272:6272x64,11.0881")
TORCH_CACHE_HIT = (V + "create:cache_hit,cpu,reorder,jit:uni,undef,src:bf16::blocked:acdb::f0 "
                   "dst:bf16::blocked:AcdB32a2b::f0,attr-scratchpad:user,,64x32x3x3,0.0119629")
TF_CONV_RELU = (
    V + "exec,cpu,convolution,brg_conv_fwd:avx512_core,forward_training,src:f32::blocked:acdb::f0 "
    "wei:f32:a:blocked:Adcb16a::f0 bia:f32:a:blocked:a::f0 dst:f32::blocked:acdb::f0,attr-scratchpad:user "
    "attr-post-ops:eltwise_relu,alg:convolution_direct,mb256_ic1oc32_ih28oh28kh3sh1dh0ph1_iw28ow28kw3sw1dw0pw1,11.7109")
TF_POOL_BWD = (V + "exec,cpu,pooling,jit:avx512_core,backward_data,src:f32::blocked:acdb::f0 "
               "dst:f32::blocked:acdb::f0 ws:u8::blocked:acdb::f0,,alg:pooling_max,"
               "mb256ic64_ih14oh7kh2sh2dh0ph0_iw14ow7kw2sw2dw0pw0,1.34302")
TF_REORDER = (V + "exec,cpu,reorder,jit:uni,undef,src:f32::blocked:cdba::f0 dst:f32::blocked:Adcb16a::f0,,,"
              "32x1x3x3,0.00488281")
TF_GEMM_API = (V + "exec,cpu,gemm_api,,undef,src_f32::blocked:ba:f0 wei_f32::blocked:ab:f0 dst_f32::blocked:ab:f0,,,"
               "64x256:256x6272,3.11792")
INFO = ["onednn_verbose,v1,info,oneDNN v3.7.3 (commit N/A)",
        "onednn_verbose,v1,info,cpu,runtime:threadpool,nthr:2",
        "onednn_verbose,v1,info,cpu,isa:Intel AVX-512 with float16, Intel DL Boost and bfloat16 support and Intel "
        "AMX with bfloat16 and 8-bit integer support",
        "onednn_verbose,v1,info,gpu,runtime:none",
        "onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation,prop_kind,"
        "memory_descriptors,attributes,auxiliary,problem_desc,exec_time",
        "onednn_verbose,v1,graph,info,template:operation,engine,partition_id,partition_kind,op_names,data_formats,"
        "logical_tensors,fpmath_mode,implementation,backend,exec_time"]


def test_torch_lines() -> None:
    r = onednn_log.parse_line(TORCH_DECONV_BF16)
    assert r is not None and (r.op, r.kind, r.prop) == ("exec", "deconvolution", "forward_training")
    assert r.impl == "brg_deconv:avx10_1_512_amx+brgconv_strided:avx10_1_512_amx" and r.ms == pytest.approx(11.783)
    assert r.formats() == "src:bf16:acdb wei:bf16:AcdB16b64a2b dst:bf16:acdb"  # bias left out
    assert [r.md(a).layout for a in ("src", "wei", "dst")] == ["plain", "blocked", "plain"]
    assert r.problem.startswith("mb256_ic128oc64") and r.aux == "alg:deconvolution_direct" and r.post_ops == ""
    reorder = onednn_log.parse_line(TORCH_REORDER_BF16)
    assert reorder is not None and (reorder.md("src").text(), reorder.md("dst").text()) == (
        "bf16:ABcd16b16a2b", "bf16:abcd")
    matmul = onednn_log.parse_line(TORCH_MATMUL_SUM)
    assert matmul is not None and matmul.post_ops == "sum" and matmul.problem == "256x6272:6272x64"
    hit = onednn_log.parse_line(TORCH_CACHE_HIT)
    assert hit is not None and hit.op == "create:cache_hit"


def test_tensorflow_lines() -> None:
    conv = onednn_log.parse_line(TF_CONV_RELU)
    assert conv is not None and conv.post_ops == "eltwise_relu" and conv.md("wei").tag == "Adcb16a"
    pool = onednn_log.parse_line(TF_POOL_BWD)
    assert pool is not None and (pool.kind, pool.prop, pool.aux) == ("pooling", "backward_data", "alg:pooling_max")
    assert pool.md("ws").dt == "u8" and pool.formats() == "src:f32:acdb dst:f32:acdb"  # workspace left out
    gemm = onednn_log.parse_line(TF_GEMM_API)  # its descriptors read arg_dt::kind:tag:flags
    assert gemm is not None and gemm.kind == "gemm_api" and gemm.impl == ""
    assert gemm.formats() == "src:f32:ba wei:f32:ab dst:f32:ab" and gemm.ms == pytest.approx(3.11792)


def test_timestamp_and_missing_version_are_read() -> None:
    stamped = TF_REORDER.replace("onednn_verbose,v1,", "onednn_verbose,1733380000123.456,v1,")
    bare = TF_REORDER.replace("onednn_verbose,v1,", "onednn_verbose,")
    assert onednn_log.parse_line(stamped) == onednn_log.parse_line(bare) == onednn_log.parse_line(TF_REORDER)


def test_other_lines_are_not_records() -> None:
    for line in [*INFO, "AELAB_PRIMITIVES_BEGIN", "Epoch 1/1", "", TF_REORDER.rsplit(",", 1)[0] + ",n/a"]:
        assert onednn_log.parse_line(line) is None, line
    assert onednn_log.info(INFO) == {"version": "oneDNN v3.7.3 (commit N/A)", "runtime": "threadpool", "nthr": "2",
                                     "isa": "Intel AVX-512 with float16, Intel DL Boost and bfloat16 support and "
                                            "Intel AMX with bfloat16 and 8-bit integer support"}


def test_window_summary_counts_per_step() -> None:
    step = [TF_REORDER, TF_CONV_RELU, TF_POOL_BWD, TF_GEMM_API, TORCH_CACHE_HIT, "some framework output"]
    log = [*INFO, TF_CONV_RELU, "x AELAB_PRIMITIVES_BEGIN", *step, *step, "AELAB_PRIMITIVES_END", TF_CONV_RELU]
    out = onednn_log.read(log, steps=2)
    assert out["exec_per_step"] == 4 and out["unread_lines"] == 0 and out["onednn"]["runtime"] == "threadpool"
    assert out["exec_ms_per_step"] == pytest.approx(0.00488281 + 11.7109 + 1.34302 + 3.11792, abs=1e-3)
    conv = next(x for x in out["by_kind"] if x["kind"] == "convolution")
    assert (conv["per_step"], conv["ms_per_step"]) == (1, pytest.approx(11.7109, abs=1e-3))
    assert out["by_kind"][0]["kind"] == "convolution"  # slowest first
    assert [(x["src"], x["dst"], x["per_step"]) for x in out["reorders"]] == [("f32:cdba", "f32:Adcb16a", 1)]
    assert {x["post_ops"] for x in out["by_layer"]} == {"eltwise_relu", ""}
    assert out["creates"] == [{"op": "create:cache_hit", "kind": "reorder", "per_step": 1,
                               "ms_per_step": pytest.approx(0.012, abs=1e-3)}]
    layouts = {x["layout"]: x["per_step"] for x in out["by_layout"]}
    assert layouts == {"blocked": 2, "plain": 2}  # the reorder and the conv touch a blocked format
    with pytest.raises(ValueError, match="AELAB_PRIMITIVES_END"):
        onednn_log.read(log[:-2], steps=2)
    with pytest.raises(ValueError, match="AELAB_PRIMITIVES_BEGIN"):
        onednn_log.read(step, steps=1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list("abc:_ ,.019-+")), max_size=20), max_size=14))
def test_any_verbose_looking_line_is_read_or_skipped(fields: list[str]) -> None:
    """A line of any shape after the prefix is a record or None, never an exception (a crash would lose the run)."""
    for head in ("onednn_verbose,v1,primitive,", "onednn_verbose,v1,graph,", "onednn_verbose,"):
        r = onednn_log.parse_line(head + ",".join(fields))
        assert r is None or isinstance(r.ms, float)
        if r is not None:
            r.formats(), r.post_ops  # noqa: B018 - must not raise either
