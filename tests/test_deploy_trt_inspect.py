"""The engine inspector's layer list in TensorRT 10 and TensorRT 11 spellings, and the check that an engine built
for INT8/FP16 computes in that precision (fed inspector JSON as each version writes it: no GPU here)."""

from __future__ import annotations

import json

import pytest

from cdarts_deploy.deploy import trt, trt_inspect

#: (layer type, datatype) of a small engine: stem and cell convolutions, a fused residual add, pool, classifier.
LAYERS = [("CaskConvolution", "conv_stem"), ("CaskConvolution", "cell0_conv"), ("CaskGemmConvolution", "cell0_pw"),
          ("PointWiseV2", "cell0_add"), ("CaskPooling", "pool"), ("CaskConvolution", "cell1_conv"),
          ("gemm", "classifier")]
#: The datatype each TensorRT version writes for a precision: 10 in "Format/Datatype", 11 in "Datatype".
SPELLING = {10: {"int8": "Int8 NC/32HW32", "fp32": "Row major linear FP32", "fp16": "Half NC/8HW8"},
            11: {"int8": "Int8", "fp32": "Float", "fp16": "Half"}}


def inspector_json(version: int, precision: str, names_only: bool = False) -> str:
    """Engine information as IEngineInspector.get_engine_information(JSON) returns it in TensorRT ``version``."""
    if names_only:
        return json.dumps({"Layers": [name for _, name in LAYERS]})

    def tensor(name: str) -> dict:
        if version == 10:
            return {"Name": name, "Location": "Device", "Dimensions": [8, 16, 32, 32],
                    "Format/Datatype": SPELLING[10][precision]}
        return {"Name": name, "Location": "Device", "Dimensions": [8, 16, 32, 32],
                "Datatype": SPELLING[11][precision], "Format": "Channel major (kCHW32)"}

    layers = [{"Name": name, "LayerType": kind, "Inputs": [tensor(f"{name}_in")], "Outputs": [tensor(f"{name}_out")],
               "TacticName": "sm90_xmma", "TacticValue": "0x1"} for kind, name in LAYERS]
    io = ({"Bindings": ["input", "output0"]} if version == 10 else
          {"I/O Tensors": [{"Name": "input", "IOMode": "Input", "DataType": "Float"},
                           {"Name": "output0", "IOMode": "Output", "DataType": "Float"}]})
    return json.dumps({"Layers": layers, **io})


@pytest.mark.parametrize("version", [10, 11])
@pytest.mark.parametrize("precision", ["int8", "fp16", "fp32"])
def test_layer_table_reads_both_spellings(version, precision):
    rows = trt_inspect.layer_table(inspector_json(version, precision))
    assert len(rows) == len(LAYERS) and {r["precision"] for r in rows} == {precision}
    assert {r["input_precision"] for r in rows} == {precision}
    assert [r["type"] for r in rows] == [kind for kind, _ in LAYERS] and rows[0]["tactic"] == "sm90_xmma"


@pytest.mark.parametrize("version", [10, 11])
def test_int8_asked_but_fp32_layers_is_refused(version):
    rows = trt_inspect.layer_table(inspector_json(version, "fp32"))
    with pytest.raises(trt_inspect.EnginePrecisionError, match="built for int8 but 5 of 5 convolution/GEMM"):
        trt_inspect.check_precision(rows, "int8")
    with pytest.raises(trt.EngineBuildError):  # a failed build (exit 1), not bad user input
        trt_inspect.check_precision(rows, "fp16")
    assert trt_inspect.check_precision(rows, "fp32")["passed"]


@pytest.mark.parametrize("version", [10, 11])
def test_int8_layers_pass_the_int8_check_and_fail_the_fp32_one(version):
    rows = trt_inspect.layer_table(inspector_json(version, "int8"))
    verdict = trt_inspect.check_precision(rows, "int8")
    assert verdict == {"asked": "int8", "compute_layers": 5, "in_asked_precision": 5, "share": 1.0, "other": {},
                       "passed": True}
    with pytest.raises(trt_inspect.EnginePrecisionError, match="built for fp32"):
        trt_inspect.check_precision(rows, "fp32")


def test_a_float_stem_and_classifier_are_allowed_but_not_a_float_body():
    table = trt_inspect.layer_table(inspector_json(11, "int8"))
    body = [dict(table[1], name=f"cell{i}_conv") for i in range(2, 7)]
    rows = [table[0], *table[1:-1], *body, table[-1]]  # 10 convolution/GEMM layers
    for row in (rows[0], rows[-1]):  # TensorRT may keep the 3-channel stem and the classifier in float
        rows[rows.index(row)] = dict(row, input_precision="fp32")
    assert trt_inspect.check_precision(rows, "int8")["in_asked_precision"] == 8
    rows[1] = dict(rows[1], input_precision="fp32")
    rows[2] = dict(rows[2], input_precision="fp16")
    with pytest.raises(trt_inspect.EnginePrecisionError):
        trt_inspect.check_precision(rows, "int8")


@pytest.mark.parametrize("info", [inspector_json(10, "int8", names_only=True), "not json", "{}"])
def test_an_engine_that_cannot_show_its_precision_is_refused(info):
    with pytest.raises(trt_inspect.EnginePrecisionError, match="cannot verify"):
        trt_inspect.check_precision(trt_inspect.layer_table(info), "int8")
    with pytest.raises(trt_inspect.EnginePrecisionError, match="cannot verify"):
        trt_inspect.check_precision(None, "int8")


def test_layer_table_reads_names_only_and_broken_information():
    assert trt_inspect.layer_table('{"Layers": ["conv1", "relu1"]}') == [
        {"name": "conv1", "type": None, "precision": "unknown"},
        {"name": "relu1", "type": None, "precision": "unknown"}]
    assert trt_inspect.layer_table("not json") == []
    rows = trt_inspect.layer_table(inspector_json(11, "fp16"))
    assert trt_inspect.precision_counts(rows + rows[:1] + [{"precision": "int8"}]) == {"fp16": 8, "int8": 1}
