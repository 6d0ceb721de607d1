"""Profiling a model, the profile's JSON round trip (codec timings optional), and its refusal of a model it was not
made for."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from pipelearn.planner.measure import profile_model, profile_sizes, with_codecs
from pipelearn.planner.profile import (
    CodecFit,
    ProfileError,
    StateTensor,
    block_names,
    load_profile,
    save_profile,
    state_tensors,
)


def test_profile_sizes_cover_the_mini_batch():
    assert profile_sizes(100) == [2, 4, 8, 16, 32, 64, 100]
    assert profile_sizes(8) == [2, 4, 8]
    assert profile_sizes(1) == [1]


def test_profile_measures_every_block_without_touching_the_model(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    profile = profile_model("vgg5", model, (1, 2, 2), 8, repeats=2)
    assert profile.blocks == block_names(model) == ["Flatten[0]", "Linear[40]", "ReLU[0]", "Linear[27]"]
    assert profile.sizes == [2, 4, 8]
    assert profile.input_bytes == 16 and profile.output_bytes == [16, 32, 32, 12]
    assert profile.weight_bytes[0] == 0 and profile.weight_bytes[1] > 40 * 4
    for side in (profile.device, profile.server):
        assert len(side.forward_s) == len(side.backward_s) == len(side.step_s) == 4
        assert all(len(row) == 3 and min(row) >= 0 for row in [*side.forward_s, *side.backward_s, side.loss_s])
        assert side.step_s[0] == 0.0 and side.step_s[1] > 0  # a block without parameters takes no step
        assert side.codec_s_per_byte > 0 and side.aggregate_s_per_byte > 0
        assert side.load_s_per_byte is not None and side.load_s_per_byte > 0
    # an activation message of 8 samples: 8 x (32 bytes of activation + 8 of label) plus the envelope and header
    assert 50 < profile.activation_overhead_bytes < 400 and 30 < profile.gradient_overhead_bytes < 300
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_profile_round_trips_through_json(profile, tmp_path: Path):
    made = profile()
    save_profile(made, tmp_path / "p.json")
    assert load_profile(tmp_path / "p.json") == made


def test_bad_profile_files_are_refused(profile, tmp_path: Path):
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ProfileError, match="not JSON"):
        load_profile(tmp_path / "bad.json")
    save_profile(profile(), tmp_path / "p.json")
    data = json.loads((tmp_path / "p.json").read_text())
    (tmp_path / "old.json").write_text(json.dumps({**data, "format": 99}))
    with pytest.raises(ProfileError, match="format 99"):
        load_profile(tmp_path / "old.json")
    data["device"]["forward_s"] = data["device"]["forward_s"][:2]
    (tmp_path / "short.json").write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="4 blocks x 2 sizes"):
        load_profile(tmp_path / "short.json")


def test_a_profile_refuses_another_model_or_input(profile, model):
    made = profile()
    made.check("vgg5", model, (1, 2, 2))
    with pytest.raises(ProfileError, match=r"made for vgg5 \(4 blocks.*this run has resnet18"):
        made.check("resnet18", model, (1, 2, 2))
    with pytest.raises(ProfileError, match=r"on inputs 1x2x2; this run .* on inputs 3x2x2"):
        made.check("vgg5", model, (3, 2, 2), source="p.json")
    bigger = torch.nn.Sequential(*model[:3], torch.nn.Linear(8, 5))
    with pytest.raises(ProfileError, match=r"Linear\[45\]"):
        made.check("vgg5", bigger, (1, 2, 2))
    with pytest.raises(ProfileError, match="up to 8 samples"):
        made.covers(9)


def test_a_profile_keeps_codec_timings_and_one_made_before_them_still_loads(profile, model, tmp_path: Path):
    fit = CodecFit(compress_s=0.001, compress_s_per_byte=1e-9, decompress_s=0.002, decompress_s_per_byte=2e-9)
    made = profile(compression={"int8": fit, "topk:0.1": fit})
    save_profile(made, tmp_path / "p.json")
    assert load_profile(tmp_path / "p.json") == made
    data = json.loads((tmp_path / "p.json").read_text())
    del data["weight_tensors"], data["device"]["compression"], data["server"]["compression"]
    (tmp_path / "old.json").write_text(json.dumps(data))  # as profiles were before compression
    old = load_profile(tmp_path / "old.json")
    assert old.weight_tensors is None and old.device.compression == {}
    assert with_codecs(old, model, ["none"]) == replace(old, weight_tensors=state_tensors(model))
    timed = with_codecs(old, model, ["int8", "none"], repeats=1)  # measured here, for both sides
    assert set(timed.device.compression) == set(timed.server.compression) == {"int8"}
    fitted = timed.device.compression["int8"]
    assert fitted.compress_s_per_byte > 0 and fitted.decompress_s_per_byte > 0
    assert timed.weight_tensors == state_tensors(model)
    named = [StateTensor("1.weight", [8, 4], "float32"), StateTensor("1.bias", [8], "float32")]
    assert state_tensors(model)[1] == named  # as the runtime names them
    assert with_codecs(timed, model, ["int8"]) is timed  # nothing left to measure
    data["device"]["compression"] = {"int9": asdict(fit)}
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="compression timings: unknown compression 'int9'"):
        load_profile(tmp_path / "bad.json")


def test_a_devices_compute_counts_its_user_space_share(model, monkeypatch):
    """The runtime's slowdown multiplies the user-space share of a device's CPU time, so a device's side of a
    profile holds that share; the server's side holds CPU time (the kernel's too)."""
    import time

    def half_in_the_kernel(who: int) -> object:
        spent = time.thread_time()
        return type("Usage", (), {"ru_utime": spent / 2, "ru_stime": spent / 2})()

    monkeypatch.setattr("pipelearn.planner.measure.resource.getrusage", half_in_the_kernel)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as every process of a run computes (with more, the profile reads wall time)
    try:
        profile = profile_model("vgg5", model, (1, 2, 2), 8, repeats=2)
    finally:
        torch.set_num_threads(threads)
    device, server = profile.device, profile.server
    mine_all, theirs_all = [*device.forward_s, *device.backward_s], [*server.forward_s, *server.backward_s]
    for mine, theirs in zip(mine_all, theirs_all, strict=True):
        assert mine == pytest.approx([t / 2 for t in theirs], rel=0.02)
    assert device.loss_s == pytest.approx([t / 2 for t in server.loss_s], rel=0.02)
    assert device.step_s == server.step_s  # what the share leaves alone
