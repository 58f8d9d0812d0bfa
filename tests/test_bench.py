"""The benchmark suite in its quick modes: sane rows, and each rewrites only its own doc section.

Never touches the real docs/benchmarks.md: every write goes to a temporary copy.
"""

import math
import shutil

import pytest

from bench import __main__ as bench_main
from bench import common, maskgit_sampling, scaling, train_step

SECTIONS = ("quantizers", "train_step", "maskgit_sampling", "scaling")


@pytest.fixture
def doc(tmp_path):
    copy = tmp_path / "benchmarks.md"
    if common.DOC.exists():
        shutil.copy(common.DOC, copy)
    else:
        copy.write_text("# Benchmarks\n")
    return copy


def section(text: str, name: str) -> str:
    begin, end = common.markers(name)
    return text[text.index(begin):text.index(end) + len(end)]


def test_write_section_replaces_only_its_own(doc):
    before = doc.read_text()
    common.write_section("train_step", "Tokenizer train step", "new body\n| a |", doc)
    after = doc.read_text()
    assert "new body\n| a |" in section(after, "train_step")
    for name in SECTIONS:
        begin, _ = common.markers(name)
        if name != "train_step" and begin in before:
            assert section(after, name) == section(before, name)
    # Text outside the markers (headings, hand-written notes) is untouched.
    begin, end = common.markers("train_step")
    if begin in before:
        assert before[:before.index(begin)] == after[:after.index(begin)]
        assert before[before.index(end):] == after[after.index(end):]
    # Rewriting twice is stable; a missing section is appended under its heading.
    common.write_section("train_step", "Tokenizer train step", "new body\n| a |", doc)
    assert doc.read_text() == after
    common.write_section("brand_new", "Brand new", "x", doc)
    text = doc.read_text()
    assert text.startswith(after.rstrip()) and "## Brand new" in text
    assert section(text, "brand_new") == "<!-- bench.brand_new:begin -->\nx\n<!-- bench.brand_new:end -->"


def assert_table(table: str, labels):
    lines = table.splitlines()
    assert lines[1].startswith("|---")
    assert len(lines) == 2 + len(labels)
    for line, label in zip(lines[2:], labels):
        assert label in line and line.count("|") == lines[0].count("|")


def test_train_step_and_scaling_quick():
    # Scaling's 1-device mesh at 8 images is train_step's quick case: one compile serves both.
    rows = train_step.run(quick=True, repeats=1, write=False)
    assert [r.case.size for r in rows] == ["tiny"]
    for r in rows:
        train_step.check_row(r)
        assert 0 < r.mfu < 1 and r.memory_bytes > 0 and r.num_params > 0
    assert_table(train_step.format_table(rows), ["ViT-VQGAN tiny 32px batch 8"])

    rows = scaling.run(quick=True, repeats=1, write=False)
    assert [r.num_devices for r in rows] == [1, 2]
    for r in rows:
        scaling.check_row(r)
    # Same work per device: the global step does twice the FLOPs on twice the devices.
    assert math.isclose(rows[1].flops_per_step, 2 * rows[0].flops_per_step, rel_tol=0.1)
    assert scaling.efficiency(rows[0], rows[0]) == 1.0
    assert_table(scaling.format_table(rows), ["| 1 | 8 |", "| 2 | 16 |"])


def test_maskgit_sampling_quick_writes_its_section(doc):
    before = doc.read_text()
    rows = maskgit_sampling.run(quick=True, repeats=1, write=True, command="pytest", doc=doc)
    assert len(rows) == 1
    row = rows[0]
    maskgit_sampling.check_row(row)
    assert row.forward_passes == (8, 64)
    table = maskgit_sampling.format_table(rows)
    assert_table(table, ["MaskGIT tiny, 8x8 tokens, batch 2"])
    after = doc.read_text()
    written = section(after, "maskgit_sampling")
    assert "Command: `pytest`" in written and table in written and "load average" in written
    for name in ("quantizers", "train_step", "scaling"):
        if common.markers(name)[0] in before:
            assert section(after, name) == section(before, name)


def test_main_rejects_unknown_benchmark():
    with pytest.raises(SystemExit):
        bench_main.main(["--only", "nonexistent"])


def test_maskgit_peer_quick_measures_both_steps():
    from bench import maskgit_peer

    row, _ = maskgit_peer.measure("tiny", repeats=1, with_torch=False, batch=2, grid=4)
    assert row.vqjax_s > 0 and row.torch_s is None and row.params > 0
    assert "not installed" in maskgit_peer.table([row])
    torch = pytest.importorskip("torch", reason="the PyTorch peer needs torch (bench/requirements.txt)")
    row, version = maskgit_peer.measure("tiny", repeats=1, with_torch=True, batch=2, grid=4)
    assert row.torch_s > 0 and version == torch.__version__


def test_accelerator_dry_run_prints_every_row(capsys):
    from bench import accelerator

    accelerator.main(["--dry-run"])
    out = capsys.readouterr().out
    for row in ("| ViT-VQGAN tiny 32px batch 8, float32 |", "| MaskGIT tiny train step",
                "8-step parallel decoding |", "| attention xla, 64 tokens",
                "| attention cudnn | not available"):
        assert row in out, row


def test_data_pipeline_quick_measures_both_paths():
    from bench import data_pipeline

    rows = data_pipeline.run(quick=True, write=False)
    assert [r.image_size for r in rows] == [64]
    for figures in (rows[0].folder, rows[0].prepared):
        assert figures["images"] == 32 and figures["images_per_cpu_s"] > 0
    assert_table(data_pipeline.format_table(rows), ["| 64 px |"])
